"""`Warehouse`: the one handle on the warehouse, shared by the pipeline and the API (no Dagster here).

Each concern is its own module, and the handle is all of them on one engine:

- `warehouse.database`: the engine, reads outside a transaction, writes that own their minutes, migrations;
- `warehouse.ingest`: raw upstream rows and their provenance (written per range, read by the pipeline);
- `warehouse.merge`: rankings joined with prices, judged (`warehouse.quality`) and published
  (`warehouse.publish`), requests settled, in one transaction;
- `warehouse.serve`: what a minute serves (the API's reads);
- `warehouse.retention`: pruning the raw rows;
- `warehouse.day_files`: a day's rows for its Parquet file, and the files' records;
- `warehouse.requests`: the backfill request lifecycle (`Warehouse.requests`).
"""

from __future__ import annotations

from typing import Any

from warehouse.day_files import DayFileStore
from warehouse.ingest import Ingest
from warehouse.merge import Merging
from warehouse.requests import BackfillRequests
from warehouse.retention import Retention
from warehouse.serve import Serving


class Warehouse(Ingest, Merging, Serving, Retention, DayFileStore):
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        super().__init__(url, **engine_kwargs)
        self.requests = BackfillRequests(self.engine, self._writer)
