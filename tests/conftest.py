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
