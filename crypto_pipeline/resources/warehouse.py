"""The warehouse as a Dagster resource: a thin wrapper over the Dagster-free `warehouse` module."""

import dagster as dg
from pydantic import Field, PrivateAttr

from warehouse.store import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """One engine per process; the URL comes from EnvVar('DATABASE_URL') so passwords stay out of run config."""

    database_url: str = Field(description="SQLAlchemy URL of the warehouse.")
    _store: Warehouse | None = PrivateAttr(default=None)

    @property
    def store(self) -> Warehouse:
        if self._store is None:
            self._store = Warehouse(self.database_url)
        return self._store
