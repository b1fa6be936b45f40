"""One ``sparseqd serve`` (API + worker + embedded broker + SQLite) per module: the SDK and the command line are tested
over real HTTP, as users run them."""

from __future__ import annotations

import pytest
from sparseq import Sparseq

from tests.helpers.processes import served

# Estimates are limited to 3 per 4 s for this service, so that a test can meet a real 429 with Retry-After (the
# estimate is the one limited route that starts no work); nothing else in these modules asks for estimates.
ESTIMATE_LIMIT = "3/4 seconds"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("client") / "data", SPARSEQ_RATE_LIMIT_ESTIMATES=ESTIMATE_LIMIT) as server:
        yield server


@pytest.fixture
def sparseq(server):
    with Sparseq(server.key, server.url, backoff=0.05) as client:
        yield client


@pytest.fixture
def lm_text() -> bytes:
    """A small corpus the lm_text validation accepts: space-separated tokens, one sentence per line."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    return "".join(" ".join(words[(i + j) % 10] for j in range(8)) + "\n" for i in range(2000)).encode()
