"""The schema on PostgreSQL: the real migrations make every table. The API tests marked ``databases`` run on
PostgreSQL as well as on SQLite, through the parametrised ``database_url`` fixture (tests/service/conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect


@pytest.mark.databases("postgresql")
def test_the_migrations_create_every_table_on_postgresql(database_url):
    engine = create_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"api_keys", "files", "jobs", "job_events", "artifacts", "alembic_version"} <= tables
