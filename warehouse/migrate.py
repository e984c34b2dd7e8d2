"""The warehouse schema at first use: every entry point (a pipeline run or sensor, the CLI, the
API) calls `ensure_schema`, so a fresh checkout or a new DATABASE_URL needs no separate step.

The database's Alembic revision is compared with the head of the migrations (never particular
tables), so a newer migration is applied the same way. Several processes may start at once:
on Postgres the upgrade runs under a transaction-level advisory lock, on SQLite under a lock
file beside the database; the loser of the race finds the schema current and does nothing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Its own version table: Dagster's storage keeps an alembic_version table in a shared database.
VERSION_TABLE = "warehouse_alembic_version"
SCHEMA_LOCK_KEY = 0x746F7073  # Postgres advisory lock serializing schema upgrades
UPGRADE_COMMAND = "python -m warehouse upgrade"


class SchemaNotReady(RuntimeError):
    """The warehouse's schema is missing or not at the migrations' head."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@cache
def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def schema_problem(engine: Engine) -> str | None:
    """None when the schema is at head; otherwise what is wrong and what fixes it."""
    with engine.connect() as connection:
        return _describe(current_revision(connection))


def _describe(current: str | None) -> str | None:
    if current == head_revision():
        return None
    if current is not None and current not in known_revisions():
        return f"the warehouse database is at schema revision {current}, newer than this code knows: update the code"
    state = "has no warehouse schema" if current is None else f"is at schema revision {current}"
    return (
        f"the warehouse database {state}; this code needs revision {head_revision()}: "
        f"run `{UPGRADE_COMMAND}` with the same DATABASE_URL"
    )


def upgrade(engine: Engine) -> None:
    """Apply the migrations up to head, once even when several processes ask at the same time."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            with FileLock(f"{database}.migrate.lock"):
                _upgrade_in_transaction(engine)
            return
    _upgrade_in_transaction(engine)


def _upgrade_in_transaction(engine: Engine) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        if current_revision(connection) == head_revision():
            return  # another process upgraded it while we waited
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def ensure_schema(engine: Engine) -> None:
    """Make sure the schema is at head, upgrading it if not (cheap when it is: one query)."""
    with engine.connect() as connection:
        current = current_revision(connection)
    if current is not None and current not in known_revisions():
        raise SchemaNotReady(_describe(current))
    if current != head_revision():
        upgrade(engine)
