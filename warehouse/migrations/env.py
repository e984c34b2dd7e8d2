"""Alembic environment: runs on the connection handed over by `Warehouse.upgrade()`,
or on DATABASE_URL when invoked as `alembic upgrade head` with the top-level alembic.ini."""

from alembic import context
from sqlalchemy import create_engine

from warehouse.schema import metadata

config = context.config


def run(connection) -> None:
    # Its own version table: Dagster's storage keeps an alembic_version table in a shared database.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        version_table="warehouse_alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from common.settings import get_settings

    with create_engine(get_settings().database_url).begin() as new_connection:
        run(new_connection)
