"""A throwaway PostgreSQL cluster on loopback (Debian's wrappers, trust auth) and databases made by the real
migrations, for the ``databases`` marker's PostgreSQL variant (tests/service/conftest.py) and the system tests."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, inspect

from service import migrate


def unavailable() -> str | None:
    """Why no cluster can be made here, or None."""
    if shutil.which("pg_createcluster") is None:
        return "PostgreSQL is not installed (no pg_createcluster): `make test` installs Debian's postgresql package"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "the Debian cluster wrappers (pg_createcluster/pg_ctlcluster) must be run as root here"
    return None


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


def _pick_port(skip: int = 0) -> int:
    """5433 as in MACHINE-NOTES.md, or the next port no other cluster (another engineer's test run, another pytest-xdist
    worker) has taken; ``skip`` passes over that many free ones (a retry after losing a race for one)."""
    taken = _cluster_ports()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = PREFERRED_PORT + 10 * (int(worker) if worker.isdigit() else 0)  # xdist workers start apart
    free = (port for port in range(start, start + 50) if port not in taken and _port_is_free(port))
    for _ in range(skip):
        next(free, None)
    port = next(free, None)
    if port is None:
        raise RuntimeError("no free port for a PostgreSQL test cluster")
    return port


def _admin_url(port: int, database: str = "postgres") -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"


@contextmanager
def cluster() -> Iterator[int]:
    """A throwaway cluster (trust auth, loopback); yields its port and drops it at the end."""
    version, name = _version(), f"sparseq_test_{os.getpid()}"
    subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False)  # a stale one
    try:
        for attempt in range(5):  # a port free when picked can be taken before the cluster listens on it
            port = _pick_port(skip=attempt)
            subprocess.run(
                ["pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust"],
                capture_output=True,
                check=True,
            )
            started = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, text=True)
            if started.returncode == 0:
                break
            subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False)
        else:
            raise RuntimeError(f"the PostgreSQL test cluster did not start: {started.stderr.strip()}")
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


@contextmanager
def migrated_database(postgres: int) -> Iterator[str]:
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


def emptied(migrated_database: str) -> str:
    """The migrated database with every table emptied (its schema kept)."""
    engine = create_engine(migrated_database)
    try:
        tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()
    return migrated_database
