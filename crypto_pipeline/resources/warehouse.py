"""The warehouse as a Dagster resource: a thin wrapper over the Dagster-free `warehouse` module."""

from functools import cache

import dagster as dg
from pydantic import Field

from warehouse.store import Warehouse


@cache
def warehouse_for(url: str) -> Warehouse:
    """One engine (and pool) per URL per process, shared by every run step and sensor tick."""
    return Warehouse(url)


class WarehouseResource(dg.ConfigurableResource):
    """The URL comes from EnvVar('DATABASE_URL') so a password stays out of run config."""

    database_url: str = Field(description="SQLAlchemy URL of the warehouse.")

    @property
    def store(self) -> Warehouse:
        return warehouse_for(self.database_url)
