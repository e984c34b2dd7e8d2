"""Where the day files go, and which minutes a day is expected to hold: configuration shown in the Dagster UI."""

from datetime import datetime

import dagster as dg
from pydantic import Field

from warehouse.day_files import DayFiles


class HistoryFilesConfig(dg.ConfigurableResource):
    directory: str = Field(description="The folder of the day files (HISTORY_DIR).")
    history_start: str = Field(description="The first minute a day is expected to hold (HISTORY_START, ISO 8601).")

    @property
    def first_minute(self) -> datetime:
        return datetime.fromisoformat(self.history_start)

    @property
    def files(self) -> DayFiles:
        return DayFiles(self.directory)
