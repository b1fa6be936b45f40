"""Run the Alembic migrations (the only way the schema is created)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"  # package data: shipped in the wheel


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def revisions(url: str) -> tuple[str | None, str]:
    """(the database's revision, or None where it has no schema; the newest revision of the migrations)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from service.db import make_engine

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    location = make_url(url)
    on_disk = location.get_backend_name() == "sqlite" and location.database not in (None, "", ":memory:")
    if on_disk and not Path(location.database).exists():  # connecting would create an empty database file
        return None, head
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision(), head
    finally:
        engine.dispose()


def known(url: str, revision: str) -> bool:
    """Whether ``revision`` is one of these migrations (a database migrated by newer code has one that is not)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config(url)).get_revision(revision) is not None
    except CommandError:
        return False
