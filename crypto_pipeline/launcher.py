"""The run launcher of both instances: Dagster's DefaultRunLauncher, with a health check that lets
Dagster's run monitoring fail a run whose worker is gone.

DefaultRunLauncher has no health check, so a run whose code server was restarted or recreated
(taking its run workers with it) stayed STARTED for ever, holding its minute and its backfill
requests. The code server that launched a run keeps it in its list of current runs until its
worker exits (a worker that dies alone is failed by the code server itself), so the question is
asked of that server: it answers and no longer runs it → failed; it does not answer for longer
than `unreachable_grace_seconds` → failed; otherwise running. Run monitoring polls every
`poll_interval_seconds` of the instance's `run_monitoring` and reports the failure; run retries
then retry the run once, and an unpublished minute is healed like any other.

Imported by the daemon and the webserver from the instance file: it needs Dagster only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dagster import Field
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import GetCurrentRunsResult
from dagster._serdes import ConfigurableClassData, deserialize_value

DEFAULT_UNREACHABLE_GRACE_SECONDS = 180


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches runs as DefaultRunLauncher does; judges a run alive while its code server runs it."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        unreachable_grace_seconds: int = DEFAULT_UNREACHABLE_GRACE_SECONDS,
    ) -> None:
        super().__init__(inst_data=inst_data)
        self.unreachable_grace_seconds = unreachable_grace_seconds
        self._unreachable_since: dict[str, float] = {}  # run id -> first failed check (this process)

    @classmethod
    def config_type(cls) -> dict:
        return {
            "unreachable_grace_seconds": Field(int, is_required=False, default_value=DEFAULT_UNREACHABLE_GRACE_SECONDS)
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        client = self._get_grpc_client_for_termination(run.run_id)  # from the run's grpc_info tag
        if client is None:  # finished meanwhile, or executed in a CLI process: judged by its max runtime
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not running in a code server")
        server = f"the code server at {client.host}:{client.port or client.socket}"
        try:
            current = deserialize_value(client.get_current_runs(), GetCurrentRunsResult).current_runs
        except DagsterUserCodeUnreachableError:
            since = self._unreachable_since.setdefault(run.run_id, time.monotonic())
            if time.monotonic() - since < self.unreachable_grace_seconds:
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"{server} does not answer yet", transient=True)
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"{server} has not answered for {self.unreachable_grace_seconds} s"
            )
        self._unreachable_since.pop(run.run_id, None)
        if run.run_id in current:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"{server} no longer runs it: the server restarted since, taking its worker with it"
        )
