"""Alembic environment: runs on the connection handed over by `warehouse.migrate.upgrade()`,
or on DATABASE_URL when invoked as `alembic upgrade head` with the top-level alembic.ini."""

from alembic import context
from sqlalchemy import create_engine

from warehouse.migrate import VERSION_TABLE
from warehouse.schema import metadata

config = context.config


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        version_table=VERSION_TABLE,
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
