"""One ``sparseqd serve`` (API + worker + embedded broker + SQLite) for the module: the SDK and the command line are
tested over real HTTP, as users run them."""

from __future__ import annotations

import pytest

from client import Client
from tests.helpers.processes import served


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("client") / "data") as server:
        yield server


@pytest.fixture
def sparseq(server):
    with Client(server.key, server.url, backoff=0.05) as client:
        yield client


@pytest.fixture
def lm_text() -> bytes:
    """A small corpus the lm_text validation accepts: space-separated tokens, one sentence per line."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    return "".join(" ".join(words[(i + j) % 10] for j in range(8)) + "\n" for i in range(2000)).encode()
