"""Run the Alembic migrations (the only way the schema is created)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def _migrations() -> Path:
    """The Alembic scripts: the top-level ``migrations/`` of a clone, shipped inside the wheel as
    ``service/migrations`` (pyproject's package-dir mapping)."""
    here = Path(__file__).resolve().parent
    installed = here / "migrations"
    return installed if installed.is_dir() else here.parent / "migrations"


MIGRATIONS = _migrations()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def schema_state(url: str) -> tuple[str, str | None, str]:
    """How the database stands against these migrations: ("current" | "missing" | "behind" | "ahead", its revision,
    the newest one). "ahead": at a revision these migrations do not know (newer code migrated it). Looking never
    creates anything, not even an empty SQLite file."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    from sqlalchemy.engine import make_url

    from service.db import make_engine

    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    location = make_url(url)
    on_disk = location.get_backend_name() == "sqlite" and location.database not in (None, "", ":memory:")
    if on_disk and not Path(location.database).exists():
        return "missing", None, head
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    if current is None:
        return "missing", None, head
    if current == head:
        return "current", current, head
    try:
        known = script.get_revision(current) is not None
    except CommandError:
        known = False
    return ("behind" if known else "ahead"), current, head
