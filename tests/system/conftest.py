"""Fixtures of the system tests: the real `sparseqd` processes (API, Celery worker, broker) over real HTTP; the
helpers they use are plain modules in tests/helpers (processes, checks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import Server, process_env


@pytest.fixture(scope="session")
def ptb_slices(ptb) -> dict[str, str]:
    """~300 training and 60 validation sentences of the Penn Treebank."""
    return {
        "train": "\n".join(ptb["train"].splitlines()[:300]) + "\n",
        "valid": "\n".join(ptb["valid"].splitlines()[:60]) + "\n",
    }


@pytest.fixture(autouse=True)
def _system_tests_on_one_torch_thread(one_torch_thread):
    """load_checkpoint and forward passes in the test process itself stay on one core too."""


@pytest.fixture
def start_server(tmp_path_factory) -> Iterator:
    """``start_server(*args, env=...)`` -> a started Server; every one is ended (by pid) when the test ends."""
    servers: list[Server] = []

    def start(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None, **kwargs) -> Server:
        directory = data_dir or tmp_path_factory.mktemp("sparseqd") / "data"
        server = Server(directory, *args, env=env or process_env(directory))
        servers.append(server)
        return server.start(**kwargs)

    yield start
    for server in servers:
        server.close()
