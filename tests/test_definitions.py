"""The code location loads, shows the intended lineage, and schedules one run per minute."""

from datetime import UTC, datetime

import dagster as dg

from crypto_pipeline.definitions import defs
from crypto_pipeline.schedules import every_minute


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_lineage_prices_and_rankings_feed_top_assets_with_checks():
    graph = defs.resolve_asset_graph()
    top = dg.AssetKey("top_assets")
    assert graph.get(top).parent_keys == {dg.AssetKey("prices"), dg.AssetKey("rankings")}
    check_names = {key.name for key in graph.asset_check_keys if key.asset_key == top}
    assert check_names == {"ranks_contiguous", "unique_cmc_ids", "prices_positive", "top_100_match_rate", "row_count"}


def test_day_files_depend_on_the_minutes_and_have_their_checks_and_sensor():
    graph = defs.resolve_asset_graph()
    day_file = dg.AssetKey("history_day_file")
    assert graph.get(day_file).parent_keys == {dg.AssetKey("top_assets")}
    checks = {key.name: graph.get_check_spec(key).blocking for key in graph.get_check_keys_for_assets({day_file})}
    assert checks == {
        "minutes_as_stored": True,
        "ranks_contiguous": True,
        "rows_as_stored": True,
        "day_complete": False,
    }
    sensor = defs.get_sensor_def("history_day_files_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.job_name == "history_day_files"


def test_schedule_is_on_by_default_and_requests_the_minute_of_the_tick():
    assert every_minute.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = datetime(2026, 11, 27, 12, 5, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
        (request,) = every_minute.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-27-12:05" and request.run_key == "2026-11-27-12:05"


def test_minute_job_runs_in_process():
    job = defs.resolve_job_def("minute_snapshot")
    assert job.executor_def.name == "in_process"
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} >= {
        "prices",
        "rankings",
        "top_assets",
    }
