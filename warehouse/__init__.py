"""The warehouse, free of Dagster: schema, Alembic migrations, every read and write of the pipeline and the API."""
