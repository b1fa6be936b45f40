"""The language-model job against real servers: Debian's PostgreSQL and redis-server, started here on loopback
(MACHINE-NOTES.md), with `sparseqd serve --database-url ... --broker-url ...`.

Ports 5434 (PostgreSQL) and 6390 (Redis) unless something listens there already (5433 is another suite's).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import redis

from tests.helpers.checks import check_language_model_job
from tests.helpers.processes import LM_RECIPE, free_port, process_env, redis_binary, start_redis, which_outside_venv

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _postgres_version() -> str | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parts[-3] if versions else None


def _missing() -> str | None:
    if which_outside_venv("pg_createcluster") is None or _postgres_version() is None:
        return "PostgreSQL is not installed (apt-get install -y postgresql; `make test` installs it)"
    if redis_binary() is None:
        return "Debian's redis-server is not installed (apt-get install -y redis-server; `make test` installs it)"
    if os.geteuid() != 0:
        return "Debian's pg_createcluster/pg_ctlcluster wrappers need root here"
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway cluster (trust auth on loopback), dropped afterwards even when the test failed."""
    version, name = _postgres_version(), f"sparseq_system_{os.getpid()}"
    port = free_port(5434)
    subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True)  # a leftover of a killed run
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run(["pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust"], **run)
    try:
        subprocess.run(["pg_ctlcluster", version, name, "start"], **run)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(url, connect_timeout=10) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
        yield url
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port(6390)
    server = start_redis(redis_binary(), tmp_path_factory.mktemp("redis"), port=port)
    yield f"redis://127.0.0.1:{port}/0"
    server.close()


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_language_model_job_on_postgres_and_redis(postgres_url, redis_url, start_server, ptb_slices, tmp_path):
    database_url = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    data_dir = tmp_path / "data"
    server = start_server(
        "--database-url", database_url, "--broker-url", redis_url, data_dir=data_dir, env=process_env(data_dir)
    )
    api = server.client()
    files = {
        "train": api.upload(ptb_slices["train"], "ptb.train.txt")["id"],
        "valid": api.upload(ptb_slices["valid"], "ptb.valid.txt")["id"],
    }
    job = api.wait(api.submit(LM_RECIPE, files)["id"], timeout=180)
    check_language_model_job(api, job, tmp_path)

    # The job really lived in PostgreSQL (migrated by serve) and went through the Debian redis-server.
    with psycopg.connect(postgres_url) as connection:
        status, attempts = connection.execute("select status, attempts from jobs where id = %s", [job["id"]]).fetchone()
        revision = connection.execute("select version_num from alembic_version").fetchone()
    assert (status, attempts) == ("succeeded", 1) and revision is not None
    assert not (data_dir / "sparseq.db").exists(), "serve fell back to SQLite"
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen("jobs") == 0 and broker.zcard("unacked_index") == 0
    assert int(broker.info("stats")["total_commands_processed"]) > 0
