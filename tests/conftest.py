from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="session")
def ptb() -> dict[str, str]:
    """The Penn Treebank LM text shipped by the `treebank` package (its module has an invalid escape sequence)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import treebank
    return {split: treebank.penn[split] for split in ("train", "valid", "test")}


@pytest.fixture
def one_torch_thread():
    """Torch work in the test process stays on one core (the machine has two; a server or worker may hold the other)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
