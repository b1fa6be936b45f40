"""The same API tests against PostgreSQL: a throwaway Debian cluster on loopback (MACHINE-NOTES.md), the real
migrations run once in a database that is emptied before each test, and a representative subset of the SQLite tests
re-run on it by overriding the ``database_url`` fixture for this module."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from service import migrate
from tests.service import test_auth, test_files, test_jobs, test_maintenance, test_system_routes

pytestmark = [
    pytest.mark.skipif(
        shutil.which("pg_createcluster") is None,
        reason="PostgreSQL is not installed (no pg_createcluster): `make test` installs Debian's postgresql package",
    ),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,
        reason="the Debian cluster wrappers (pg_createcluster/pg_ctlcluster) must be run as root here",
    ),
]

PREFERRED_PORT = 5433


def _version() -> str:
    versions = sorted((p.name for p in Path("/usr/lib/postgresql").iterdir() if p.name.isdigit()), key=int)
    return versions[-1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports() -> set[int]:
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[2]) for line in listing.splitlines() if line.strip()}


def _pick_port() -> int:
    """5433 as in MACHINE-NOTES.md, or the next port no other cluster (another engineer's test run) has taken."""
    taken = _cluster_ports()
    for port in range(PREFERRED_PORT, PREFERRED_PORT + 50):
        if port not in taken and _port_is_free(port):
            return port
    raise RuntimeError("no free port for a PostgreSQL test cluster")


def _admin_url(port: int, database: str = "postgres") -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A throwaway cluster (trust auth, loopback); yields its port and drops it at the end."""
    version, name = _version(), f"sparseq_test_{os.getpid()}"
    subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False)  # a stale one
    port = _pick_port()
    try:
        subprocess.run(
            ["pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, check=True)
        engine = create_engine(_admin_url(port))
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine.connect():
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        engine.dispose()
        yield port
    finally:
        subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "immediate"], capture_output=True, check=False)
        subprocess.run(["pg_dropcluster", version, name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def migrated_database(postgres) -> Iterator[str]:
    """One PostgreSQL database for the module, its schema made by the Alembic migrations."""
    name = f"sparseq_{secrets.token_hex(6)}"
    admin = create_engine(_admin_url(postgres), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = _admin_url(postgres, name)
    migrate.upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def database_url(migrated_database) -> str:
    """Overrides conftest.py's SQLite database: the migrated PostgreSQL database, emptied before each test."""
    engine = create_engine(migrated_database)
    try:
        tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()
    return migrated_database


def test_the_migrations_create_every_table_on_postgresql(database_url):
    engine = create_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"api_keys", "files", "jobs", "job_events", "artifacts", "alembic_version"} <= tables


# -- the SQLite tests re-run here, on PostgreSQL ------------------------------------------------------------------

test_upload_each_purpose = test_files.test_upload_each_purpose_is_processed_with_the_sha256_of_its_bytes
test_bad_file_status = test_files.test_a_bad_file_is_stored_with_status_error_naming_the_first_bad_line
test_chunked_upload_413 = test_files.test_chunked_upload_without_content_length_is_413_and_leaves_nothing
test_file_list_pages = test_files.test_list_pages_newest_first_without_duplicates_or_gaps
test_file_delete = test_files.test_delete_then_everything_is_404_and_the_blob_is_gone
test_file_delete_in_use = test_files.test_delete_is_refused_while_a_queued_job_uses_the_file
test_file_delete_race = test_files.test_a_delete_during_a_job_creation_waits_for_it_and_is_refused
test_blob_release_race = test_files.test_an_upload_of_the_same_bytes_during_a_blob_release_keeps_its_content
test_artifact_release_race = test_files.test_an_artifact_of_the_same_bytes_during_a_blob_release_keeps_its_content
test_gc_blobs = test_maintenance.test_only_blobs_nothing_refers_to_are_removed
test_file_other_owner = test_files.test_another_owner_gets_404_on_every_file_route

test_job_create = test_jobs.test_create_commits_a_queued_job_and_puts_exactly_one_message_on_the_broker
test_job_recipe_errors = test_jobs.test_recipe_errors_are_422_naming_the_field
test_job_idempotent_replay = test_jobs.test_same_idempotency_key_and_body_returns_the_same_job_once
test_job_idempotency_race = test_jobs.test_concurrent_posts_with_one_idempotency_key_make_one_job
test_job_idempotency_conflict = test_jobs.test_same_idempotency_key_with_another_body_is_409
test_job_list_pages = test_jobs.test_list_filters_by_status_and_pages_newest_first
test_job_cancel = test_jobs.test_cancel_a_queued_job_is_idempotent
test_job_cancel_finished = test_jobs.test_cancel_a_finished_job_is_409
test_job_events_page = test_jobs.test_events_page_newest_first
test_job_artifact_range = test_jobs.test_an_artifact_downloads_whole_and_by_range
test_job_other_owner = test_jobs.test_another_owner_gets_404_on_every_job_route
test_job_broker_down = test_jobs.test_broker_down_is_503_quickly_and_the_job_is_failed_not_left_queued

test_keys_hashed = test_auth.test_keys_are_stored_only_as_their_hmac
test_revoked_key = test_auth.test_a_revoked_key_is_401_once_the_key_cache_expires
test_metrics = test_system_routes.test_metrics_counts_jobs_by_state_queue_depth_and_latency
test_readyz = test_system_routes.test_readyz_with_the_real_broker
