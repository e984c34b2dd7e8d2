"""What a run carries and what Dagster's run records say about its family, in one place.

The tags are read by more than one part of the code location (the jobs set them, the schedule,
the request sensor and the assets read them), by the instance files (deploy/dagster*.yaml limit
the runs of backfill requests by REQUEST_TAG) and by scripts.backfill_range, so none of them owns
them. The lookups are the questions the assets and the sensor ask of Dagster's records.
"""

import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg

# Dagster's own tags.
RUN_KEY_TAG = "dagster/run_key"  # every sensor run has its run key here, and a run retry inherits it
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"  # on every run of a backfill
ROOT_BACKFILL_TAG = "dagster/root_backfill_id"  # and on a re-executed backfill's, the first one's id
PRIORITY_TAG = "dagster/priority"  # the run queue dequeues higher priorities first
# Run monitoring ends a run still running this long after it started (a hung database, say).
MAX_RUNTIME_TAG = "dagster/max_runtime"
# Dagster's run retries: the failed run is tagged will_retry right after its failure is stored,
# and the daemon creates the retry (or tags the run auto_retry_run_id) an iteration later.
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"

# This project's tags.
REQUEST_TAG = "crypto_toplist/backfill_request"  # its value: the run key the request was submitted under
# A run tagged with a niceness lowers its own CPU priority before it works (yield_cpu).
NICENESS_TAG = "crypto_toplist/niceness"
# When a range run by scripts.backfill_range began: its day runs choose their candidates alike.
CANDIDATES_BEFORE_TAG = "crypto_toplist/candidates_before"

# The live minute goes first: its runs leave the queue before everything else, the runs of
# backfill requests have their own concurrency limit (deploy/dagster*.yaml), and they yield the
# CPU (BACKFILL_NICENESS), so on a busy machine the live minute, which has a deadline, is not slowed.
LIVE_PRIORITY = {PRIORITY_TAG: "10"}
# Runs of healed minutes alone leave the queue after the runs of people's requests (priority 0)
# and the live minutes, though they share the request runs' concurrency limit.
HEALER_PRIORITY = {PRIORITY_TAG: "-1"}
BACKFILL_NICENESS = "10"
# A minute's run takes seconds; one still running after this is ended, and its minute healed
# from the historical endpoints.
MINUTE_RUN_MAX_RUNTIME = {MAX_RUNTIME_TAG: "600"}

# A retry not created this long after its run failed never comes (the daemon stopped, creation failed).
RETRY_GRACE = timedelta(seconds=60)


def yield_cpu(tags: dict[str, str]) -> None:
    """Lower this run worker's CPU priority to the run's niceness tag, once (threads started
    afterwards, like the fetch pool, inherit it). The runs of a UI backfill (two at a time)
    yield like the API's requests unless tagged otherwise."""
    default = BACKFILL_NICENESS if BACKFILL_TAG in tags else "0"
    wanted, current = int(tags.get(NICENESS_TAG, default)), os.nice(0)
    if wanted > current:
        os.nice(wanted - current)


def run_family(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    """When the first run of this run's family (the run itself unless it is a re-execution) was
    created, and when the range it belongs to began (what its candidates may be chosen from).

    The first run is the oldest still stored when prune_storage deleted the root (a kept failure
    can outlive its successful or canceled root), which only means fetching more again. The range
    began when the backfill its first run belongs to was launched (Dagster copies the backfill's
    tag to a re-execution only while the backfill is running), when scripts.backfill_range
    started (CANDIDATES_BEFORE_TAG on each of its day runs), else with the family."""
    run = context.run
    family = [run.root_run_id, run.parent_run_id, run.run_id]
    record = next(r for run_id in family if run_id and (r := context.instance.get_run_record_by_id(run_id)))
    created = record.create_timestamp.replace(tzinfo=record.create_timestamp.tzinfo or UTC)
    tags = record.dagster_run.tags
    if stamp := tags.get(CANDIDATES_BEFORE_TAG):
        try:
            began = datetime.fromisoformat(stamp)
        except ValueError as error:
            message = f"tag {CANDIDATES_BEFORE_TAG}={stamp!r} is not an ISO time"
            raise dg.Failure(message, allow_retries=False) from error
        return created, began if began.tzinfo else began.replace(tzinfo=UTC)
    # "Re-execute backfill" makes a new backfill; the first one's id stays in root_backfill_id.
    backfill_id = tags.get(ROOT_BACKFILL_TAG) or tags.get(BACKFILL_TAG)
    backfill = context.instance.get_backfill(backfill_id) if backfill_id else None
    return created, datetime.fromtimestamp(backfill.backfill_timestamp, UTC) if backfill else created


def newest_runs(instance: dg.DagsterInstance, run_keys: Iterable[str]) -> dict[str, dg.RunRecord]:
    """The newest run carrying each request key (a run retry inherits its parent's tags)."""
    # By RUN_KEY_TAG, not REQUEST_TAG: runs launched before migration 0003 carry REQUEST_TAG
    # "true", but their key in RUN_KEY_TAG too.
    newest: dict[str, dg.RunRecord] = {}
    for record in instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: sorted(run_keys)})):
        key = record.dagster_run.tags[RUN_KEY_TAG]
        if key not in newest or record.create_timestamp > newest[key].create_timestamp:
            newest[key] = record
    return newest


def retry_may_come(instance: dg.DagsterInstance, record: dg.RunRecord, now: datetime) -> bool:
    """Whether a failed run's automatic retry may still be created: it is tagged will_retry (or,
    with run retries on, not tagged yet: the tag follows the failure), no retry was created, and
    the failure is younger than RETRY_GRACE. A retry that comes later still settles its minutes."""
    tags = record.dagster_run.tags
    will_retry = tags.get(WILL_RETRY_TAG, "true" if instance.run_retries_enabled else "false")
    if will_retry != "true" or AUTO_RETRY_RUN_ID_TAG in tags:
        return False
    failed_at = record.end_time or record.update_timestamp.timestamp()
    return now.timestamp() - failed_at < RETRY_GRACE.total_seconds()
