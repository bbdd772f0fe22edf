"""listens_daily end to end: one Airflow run per day equals the in-process library result."""

from __future__ import annotations

import gzip
import shutil
from datetime import date, timedelta

import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.lake import daily
from musicrec.sample import simulate
from tests.conftest import airflow_dags_test

pytestmark = pytest.mark.integration

DAYS = [date(2009, 5, 5) + timedelta(days=i) for i in range(5)]


def _landing(tmp_root, tiny_sample):
    """The tiny sample's 3 landing days + 2 simulated days split over 3 files, one with corrupt lines."""
    src = tmp_root / "daily-landing"
    if not src.exists():
        shutil.copytree(tiny_sample.landing_dir, src)
        simulate(2, src, preset="tiny", seed=7, files_per_day=3)
        bad = src / "date=2009-05-08" / "events-0009.jsonl.gz"
        good = gzip.decompress((src / "date=2009-05-08" / "events-0001.jsonl.gz").read_bytes()).splitlines()
        bad.write_bytes(gzip.compress(b"\n".join([good[0], b"{not json", b'{"user_id": ""}', b"\xff\xfe"]) + b"\n"))
    return src


def _registry(mongo_uri: str, db: str) -> dict[str, tuple[int, str]]:
    with MongoClient(mongo_uri) as client:
        return {d["_id"]: (d["rows"], d["sha256"]) for d in client[db]["lake_partitions"].find({"producer": "daily"})}


def test_daily_runs_equal_in_process_result_and_rerun_changes_nothing(tiny_sample, airflow_db, mongo_uri,
                                                                       tmp_root):
    landing = _landing(tmp_root, tiny_sample)

    # expected: the library, in process, on its own lake and database
    expected_lake = UPath(tmp_root / "daily-expected")
    shutil.copytree(landing, tmp_root / "daily-expected" / "landing")
    with MongoClient(mongo_uri) as client:
        db = client["daily_expected"]
        results = {d: daily.process_day(expected_lake, d, db, run_id="x") for d in [*DAYS, date(2009, 5, 10)]}
    assert results[date(2009, 5, 10)]["status"] == "no_data"
    assert results[date(2009, 5, 8)]["quarantined"] == {"invalid_json": 1, "empty_user": 1, "invalid_utf8": 1}
    assert results[date(2009, 5, 8)]["duplicates"] == 1  # the corrupt file repeats one good event
    expected = _registry(mongo_uri, "daily_expected")
    assert len(expected) == 5

    # actual: one `airflow dags test listens_daily <D+1>` per day. Airflow 3 reads the date given to
    # `dags test` as "run after", and the data-interval timetable then picks the interval that
    # ended there, [D, D+1): the same day a scheduled or backfill run for D processes.
    lake = tmp_root / "daily-airflow"
    shutil.copytree(landing, lake / "landing")
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "daily_airflow"}
    for day in DAYS:
        airflow_dags_test("listens_daily", {}, env, logical_date=(day + timedelta(days=1)).isoformat())
    assert _registry(mongo_uri, "daily_airflow") == expected
    for day in DAYS:
        rel = f"listens/date={day}/daily.parquet"
        assert (lake / rel).read_bytes() == (tmp_root / "daily-expected" / rel).read_bytes()

    # a day without landing data succeeds, with merge skipped and the lake unchanged
    out = airflow_dags_test("listens_daily", {}, env, logical_date="2009-05-11")
    assert "no landing data for 2009-05-10" in out
    assert not (lake / "listens" / "date=2009-05-10").exists()

    # re-running a day changes nothing (same bytes, registry documents untouched)
    with MongoClient(mongo_uri) as client:
        before = client["daily_airflow"]["lake_partitions"].find_one({"_id": "listens/date=2009-05-08/daily.parquet"})
    airflow_dags_test("listens_daily", {"date": "2009-05-08"}, env)
    with MongoClient(mongo_uri) as client:
        after = client["daily_airflow"]["lake_partitions"].find_one({"_id": "listens/date=2009-05-08/daily.parquet"})
    assert after == before
