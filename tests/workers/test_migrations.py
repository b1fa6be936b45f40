"""The Alembic migrations are the only way the schema is made: they must match the models and run both ways."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.migrate import downgrade, upgrade
from service.tables import Base


def test_head_matches_the_models_and_downgrades_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert {"api_keys", "files", "jobs", "job_events", "artifacts"} <= set(inspect(engine).get_table_names())
    downgrade(url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert "jobs" in inspect(engine).get_table_names()
    engine.dispose()
