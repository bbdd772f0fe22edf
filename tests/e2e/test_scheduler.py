"""The project as its users run it: DAGs under the scheduler of ``airflow standalone``.

Triggered through the REST API (token from ``/auth/token``), scheduled by the scheduler itself,
and backfilled with ``airflow backfill create``; every run must succeed.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHAIN = ("catalog_sync", "lyrics_enrichment", "lyrics_embeddings")  # set off by listens_import's assets
LANDING_DAYS = ("2009-05-05", "2009-05-06", "2009-05-07")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_listens_import_sets_off_the_asset_chain(airflow_standalone, tiny_sample):
    af = airflow_standalone
    af.unpause("listens_import", *CHAIN)
    since = _now()
    run_id = af.trigger("listens_import", {"source_url": tiny_sample.archive.as_uri(), "dataset": "lastfm-1k"})
    af.wait_run("listens_import", run_id, timeout_s=240)
    for dag_id in CHAIN:
        af.wait_runs(dag_id, "asset_triggered", 1, timeout_s=300, since=since)


def test_als_training_and_store_audit_triggered(airflow_standalone):
    """Unpausing als_training on a fresh install creates the latest week's scheduled run. Its window
    (the last 90 days) holds no listens and no daily feed runs: it must neither wait hours for day W−1
    nor retry, and so not hold the DAG's single active run from the manual run behind it."""
    af = airflow_standalone
    af.unpause("als_training", "store_audit")
    run_id = af.trigger("als_training", {"factors": 8, "iterations": 3, "window_days": 3650})
    af.wait_run("als_training", run_id, timeout_s=240)
    scheduled = [r for r in af.runs("als_training") if r["run_type"] == "scheduled"]
    assert [r["state"] for r in scheduled] == ["failed"], scheduled
    tis = {ti["task_id"]: ti for ti in af.task_instances("als_training", scheduled[0]["dag_run_id"])}
    assert tis["wait_for_listens"]["state"] == "success"
    assert (tis["train"]["state"], tis["train"]["try_number"]) == ("failed", 1)  # no retry of a data condition
    assert "nothing to train as of" in af.task_log("als_training", scheduled[0]["dag_run_id"], "train")
    run_id = af.trigger("store_audit", {})
    af.wait_run("store_audit", run_id, timeout_s=240)


def test_listens_daily_is_scheduled_by_the_scheduler(airflow_standalone):
    """Unpaused, the data-interval DAG gets its latest interval's run from the scheduler alone."""
    af = airflow_standalone
    af.unpause("listens_daily")
    (run,) = af.wait_runs("listens_daily", "scheduled", 1, timeout_s=180)
    assert run["data_interval_end"] > run["data_interval_start"]


def test_backfill_three_days_of_listens_daily(airflow_standalone, tiny_sample):
    af = airflow_standalone
    lake = af.data / "lake"
    for day in LANDING_DAYS:
        src = tiny_sample.landing_dir / f"date={day}"
        shutil.copytree(src, lake / "landing" / f"date={day}", dirs_exist_ok=True)
    since = _now()
    af.unpause("listens_daily")
    args = ("backfill", "create", "--dag-id", "listens_daily", "--from-date", LANDING_DAYS[0],
            "--to-date", LANDING_DAYS[-1], "--reprocess-behavior", "completed")
    for attempt in range(3):
        try:
            af.airflow(*args)
            break
        except AssertionError as exc:
            # SQLite (the embedded default) fails a transaction at once with "database is locked" when
            # two writers' transactions deadlock, whatever the busy timeout (the triggerer's change-stream
            # watchers write asset events meanwhile). What a user does then: run the command again — but
            # only if it created no backfill, which this checks.
            made = af.get("/api/v2/backfills", params={"dag_id": "listens_daily"})["backfills"]
            if "database is locked" not in str(exc) or made or attempt == 2:
                raise
            time.sleep(5)
    runs = af.wait_runs("listens_daily", "backfill", 3, timeout_s=300, since="")
    assert len(runs) == 3, runs
    assert since  # the backfill runs are for 2009 intervals; run_after is the interval end
    for day in LANDING_DAYS:
        assert (lake / "listens" / f"date={day}" / "daily.parquet").exists(), f"no daily partition for {day}"


def test_the_connection_form_lists_the_projects_connection_types(airflow_standalone):
    """The running API server's ``/ui/connections/hook_meta`` (what the UI's "Add connection" form reads)
    knows the provider entry point's types, with their own fields."""
    metas = {m["connection_type"]: m for m in airflow_standalone.get("/ui/connections/hook_meta")}
    assert {"milvus", "lrclib", "musicrec_embedding", "mongo", "qdrant"} <= set(metas)
    assert metas["milvus"]["hook_class_name"] == "musicrec_airflow.hooks.milvus.MilvusHook"
    assert metas["milvus"]["standard_fields"]["password"]["title"] == "Token"
    assert "concurrency" in metas["lrclib"]["extra_fields"]
