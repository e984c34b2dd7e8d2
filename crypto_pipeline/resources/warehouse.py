"""The warehouse as a Dagster resource: a thin wrapper over the Dagster-free `warehouse` module."""

from functools import cache

import dagster as dg
from pydantic import Field

from warehouse.migrate import ensure_schema
from warehouse.store import Warehouse


@cache
def warehouse_for(url: str) -> Warehouse:
    """One engine (and pool) per URL per process, shared by every run step and sensor tick; the
    schema is created or upgraded at this first use (warehouse.migrate)."""
    store = Warehouse(url)
    ensure_schema(store.engine)
    return store


class WarehouseResource(dg.ConfigurableResource):
    """The URL comes from EnvVar('DATABASE_URL') so a password stays out of run config."""

    database_url: str = Field(description="SQLAlchemy URL of the warehouse.")

    @property
    def store(self) -> Warehouse:
        return warehouse_for(self.database_url)
