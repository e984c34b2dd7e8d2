"""Day files from a seeded warehouse: the checks judge real files (and fail on corrupted ones), a
write is atomic, and HISTORY_DIR refuses what it cannot write to yet."""

from __future__ import annotations

import os
import threading
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from common.settings import Settings
from tests.api.conftest import seed_snapshot
from warehouse.day_files import DayFiles, judge, write_day_file
from warehouse.store import Warehouse

DAY = date(2026, 12, 1)
MIDNIGHT = datetime(2026, 12, 1, tzinfo=UTC)
HISTORY_START = datetime(2026, 11, 1, tzinfo=UTC)
# The day's first minutes, a hole, its last minute; and the next day's first, which is not the day's.
MINUTES = [MIDNIGHT + timedelta(minutes=m) for m in (0, 1, 2, 7, 1439)]


@pytest.fixture
def seeded(database_url) -> Warehouse:
    store = Warehouse(database_url)
    for minute in [*MINUTES, MIDNIGHT + timedelta(days=1)]:
        seed_snapshot(store, minute, depth=40)
    return store


def query(sql: str) -> list[tuple]:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()


def test_a_day_file_holds_exactly_its_stored_minutes_as_served(seeded, tmp_path):
    files = DayFiles(tmp_path / "history")
    record, verdicts, holes = write_day_file(seeded, files, DAY, HISTORY_START)
    assert all(v.passed for v in verdicts.values()), verdicts
    assert files.path(DAY) == tmp_path / "history" / "day=2026-12-01" / "minutes.parquet"
    assert files.days() == [DAY] and os.listdir(files.path(DAY).parent) == ["minutes.parquet"]
    assert (record.minutes, record.expected_minutes, record.rows) == (5, 1440, 5 * 40)
    assert record.bytes == files.path(DAY).stat().st_size
    assert seeded.day_file_records([DAY]) == {DAY: record}
    assert holes == [(MINUTES[2] + timedelta(minutes=1), MINUTES[3]), (MINUTES[3] + timedelta(minutes=1), MINUTES[4])]

    rows = query(f"SELECT * FROM read_parquet('{files.pattern}', hive_partitioning = true) ORDER BY minute, rank")
    assert [r[0] for r in rows[::40]] == MINUTES and {r[-1] for r in rows} == {DAY}  # the Hive `day` column
    for minute in MINUTES:
        served = seeded.snapshot_rows(minute, 200)
        in_file = [r for r in rows if r[0] == minute]
        assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in in_file] == [
            (s["rank"], s["cmc_id"], s["symbol"], s["name"], s["price_usd"], s["volume_24h_usd"]) for s in served
        ]
        assert {(r[7], r[8]) for r in in_file} == {("emulated", True)}  # seeded as live captures of the emulator
    metadata = pq.read_metadata(files.path(DAY)).metadata
    assert {k: metadata[k] for k in (b"day", b"minutes", b"expected_minutes", b"missing_minutes")} == {
        b"day": b"2026-12-01",
        b"minutes": b"5",
        b"expected_minutes": b"1440",
        b"missing_minutes": b"1435",
    }
    assert pq.read_metadata(files.path(DAY)).row_group(0).column(0).compression == "ZSTD"


def test_a_day_that_history_start_cuts_expects_only_its_minutes_since(seeded, tmp_path):
    start = MINUTES[-1] - timedelta(minutes=1)  # the day's last two minutes: 23:59 is stored, 23:58 not
    record, _, holes = write_day_file(seeded, DayFiles(tmp_path / "history"), DAY, start)
    assert (record.minutes, record.expected_minutes, holes) == (5, 2, [(start, MINUTES[-1])])


def corrupted(files: DayFiles, tmp_path, where: str, select: str = "*") -> str:
    """A copy of the day's file with a change made in SQL."""
    copy = tmp_path / "corrupted.parquet"
    query(f"COPY (SELECT {select} FROM '{files.path(DAY)}' {where}) TO '{copy}' (FORMAT parquet)")
    return copy


@pytest.mark.parametrize(
    "change, failing",
    [
        (
            "WHERE NOT (minute = TIMESTAMPTZ '2026-12-01 00:01:00+00' AND rank = 7)",
            {"ranks_contiguous", "rows_as_stored"},
        ),
        ("WHERE minute <> TIMESTAMPTZ '2026-12-01 00:07:00+00'", {"minutes_as_stored", "rows_as_stored"}),
        (
            "UNION ALL SELECT * FROM 'FILE' WHERE rank = 3 AND minute = TIMESTAMPTZ '2026-12-01 00:00:00+00'",
            {"ranks_contiguous", "rows_as_stored"},
        ),  # a rank twice
    ],
    ids=["a row deleted", "a minute deleted", "a rank duplicated"],
)
def test_the_checks_fail_on_a_corrupted_file(seeded, tmp_path, change, failing):
    files = DayFiles(tmp_path / "history")
    write_day_file(seeded, files, DAY, HISTORY_START)
    file = corrupted(files, tmp_path, change.replace("FILE", str(files.path(DAY))))
    verdicts = judge(file, seeded.served_day_rows(DAY))
    assert {name for name, v in verdicts.items() if not v.passed} == failing, verdicts


def test_a_rank_renumbered_fails_though_every_minute_and_count_is_right(seeded, tmp_path):
    files = DayFiles(tmp_path / "history")
    write_day_file(seeded, files, DAY, HISTORY_START)
    swapped = (
        "* REPLACE (CASE WHEN rank = 2 AND minute = TIMESTAMPTZ '2026-12-01 00:02:00+00' THEN 3 ELSE rank END AS rank)"
    )
    verdicts = judge(corrupted(files, tmp_path, "", swapped), seeded.served_day_rows(DAY))
    assert not verdicts["ranks_contiguous"].passed and not verdicts["rows_as_stored"].passed
    assert verdicts["minutes_as_stored"].passed
    assert "first 2026-12-01 00:02" in verdicts["ranks_contiguous"].detail


def test_readers_never_see_a_partial_file_while_a_day_is_rewritten(seeded, tmp_path):
    files = DayFiles(tmp_path / "history")
    write_day_file(seeded, files, DAY, HISTORY_START)
    errors, reads, done = [], [0], threading.Event()

    def read_again_and_again() -> None:
        while not done.is_set():
            try:
                (count,) = query(f"SELECT count(*) FROM '{files.pattern}'")[0]
                assert count == 5 * 40, count
                reads[0] += 1
            except Exception as error:  # noqa: BLE001 - any failure is what the test looks for
                errors.append(error)

    reader = threading.Thread(target=read_again_and_again)
    reader.start()
    try:
        for _ in range(15):
            write_day_file(seeded, files, DAY, HISTORY_START)
    finally:
        done.set()
        reader.join(30)
    assert not errors and reads[0] > 0
    assert os.listdir(files.path(DAY).parent) == ["minutes.parquet"]  # no temporary file left behind


def test_a_write_that_fails_before_the_rename_leaves_the_previous_file(seeded, tmp_path, monkeypatch):
    files = DayFiles(tmp_path / "history")
    first, _, _ = write_day_file(seeded, files, DAY, HISTORY_START)
    before = files.path(DAY).read_bytes()
    seed_snapshot(seeded, MIDNIGHT + timedelta(minutes=3), depth=40)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_day_file(seeded, files, DAY, HISTORY_START)
    assert files.path(DAY).read_bytes() == before
    assert os.listdir(files.path(DAY).parent) == ["minutes.parquet"]
    assert seeded.day_file_records([DAY]) == {DAY: first}  # the record still describes the file


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_day_without_a_stored_minute_gets_no_file(database_url, tmp_path):
    files = DayFiles(tmp_path / "history")
    record, verdicts, holes = write_day_file(Warehouse(database_url), files, DAY, HISTORY_START)
    assert (record, verdicts, len(holes)) == (None, {}, 1) and files.days() == []


def test_history_dir_is_a_local_folder_relative_to_the_project():
    assert Settings(_env_file=None, history_dir="somewhere").history_dir.is_absolute()
    with pytest.raises(ValidationError, match="object stores .* are not supported yet"):
        Settings(_env_file=None, history_dir="s3://bucket/history")
