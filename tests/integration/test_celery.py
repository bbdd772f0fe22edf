"""Distributed run: Airflow 3 with the CeleryExecutor, a PostgreSQL metadata database and Redis.

Real processes (api-server, scheduler, dag-processor, two Celery workers; see ``celery_cluster.py``)
run ``listens_import`` on the tiny preset (triggered through the scheduler, not ``dags test``)
and a 3-day ``listens_daily`` backfill whose mapped clean tasks must spread over both workers.
The lake and the ``lake_partitions`` registry they leave equal what the library computes in
process on a second lake. Skipped, with the reason, where PostgreSQL (127.0.0.1:5432) or Redis
(127.0.0.1:6379) is not running.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import date, timedelta
from pathlib import Path

import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.lake import daily, download, importer
from tests.conftest import REPO
from tests.integration.celery_cluster import CeleryCluster, services_unavailable

pytestmark = pytest.mark.integration

DAYS = [date(2009, 5, 5) + timedelta(days=i) for i in range(3)]
FILES_PER_DAY = 4  # -> 4 mapped clean tasks per day, more than one worker's concurrency
AIRFLOW_DB, EXPECTED_DB = "celery_airflow", "celery_expected"


@pytest.fixture(scope="module")
def cluster(tmp_root: Path, mongo_uri: str):
    reason = services_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_root / "celery"
    env = {
        "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": (work / "lake").as_uri(),
        "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + AIRFLOW_DB,
    }
    with CeleryCluster(work=work, repo=REPO, extra_env=env, workers=2, concurrency=1,
                       dag_files=["listens_import.py", "listens_daily.py"]) as running:
        yield running


def _registry(mongo_uri: str, db: str, producer: str | None = None) -> dict[str, tuple]:
    query = {"producer": producer} if producer else {}
    with MongoClient(mongo_uri) as client:
        return {d["_id"]: (d["producer"], d["rows"], d["sha256"]) for d in client[db]["lake_partitions"].find(query)}


def _files(root: Path, prefixes: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under the given lake prefixes, by lake-relative path."""
    out = {}
    for prefix in prefixes:
        for path in sorted((root / prefix).rglob("*")):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _write_landing(src: Path, lakes: list[Path]) -> None:
    """Split each sample landing day into FILES_PER_DAY files, written identically into every lake."""
    for day in DAYS:
        lines: list[bytes] = []
        for path in sorted((src / f"date={day}").glob("*.jsonl.gz")):
            lines += gzip.decompress(path.read_bytes()).splitlines(keepends=True)
        assert len(lines) >= FILES_PER_DAY, f"sample landing day {day} has only {len(lines)} lines"
        size = -(-len(lines) // FILES_PER_DAY)
        for lake in lakes:
            folder = lake / "landing" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(FILES_PER_DAY):
                part = b"".join(lines[i * size:(i + 1) * size])
                (folder / f"events-{i + 1:04d}.jsonl.gz").write_bytes(gzip.compress(part, mtime=0))


def _assert_all_succeeded(cluster: CeleryCluster, dag_id: str, run_ids: list[str]) -> list[tuple]:
    tis = cluster.task_instances(dag_id, run_ids)
    bad = [ti for ti in tis if ti[3] not in ("success", "skipped")]
    assert tis and not bad, f"{dag_id}: tasks not successful: {bad}\n" + cluster.diagnostics(dag_id, run_ids)
    return tis


def test_listens_import_through_celery_equals_in_process(cluster, tiny_sample, mongo_uri, tmp_root):
    conf = {"source_url": tiny_sample.archive.as_uri(), "dataset": "tiny"}
    run_id = cluster.trigger("listens_import", conf)

    # expected, while the cluster works: the library in this process on its own lake and database
    expected = tmp_root / "celery-expected"
    root = UPath(expected)
    with MongoClient(mongo_uri) as client:
        db = client[EXPECTED_DB]
        download.download(conf["source_url"], root / "raw" / "tiny")
        importer.clean_raw(root, "tiny")
        importer.partition_clean(root, "tiny", db, run_id="expected")

    states = cluster.wait_runs("listens_import", "run_id = %s", (run_id,), expected=1, timeout_s=300)
    assert states == {run_id: "success"}, cluster.diagnostics("listens_import", [run_id])
    tis = _assert_all_succeeded(cluster, "listens_import", [run_id])
    assert {ti[1] for ti in tis} == {"download", "clean", "partition"}
    assert all(ti[5] in ("worker1", "worker2") for ti in tis), f"unexpected hostnames: {tis}"

    want = _registry(mongo_uri, EXPECTED_DB, "import-tiny")
    assert any(p.startswith("listens/") for p in want) and "profiles/users.parquet" in want
    assert _registry(mongo_uri, AIRFLOW_DB, "import-tiny") == want
    prefixes = ("listens", "quarantine", "profiles")
    assert _files(cluster.work / "lake", prefixes) == _files(expected, prefixes)


def test_listens_daily_backfill_spreads_over_both_workers(cluster, tiny_sample, mongo_uri, tmp_root):
    lake, expected = cluster.work / "lake", tmp_root / "celery-expected"
    _write_landing(tiny_sample.landing_dir, [lake, expected])

    cluster.airflow("backfill", "create", "--dag-id", "listens_daily", "--from-date", DAYS[0].isoformat(),
                    "--to-date", DAYS[-1].isoformat(), "--reprocess-behavior", "completed")

    with MongoClient(mongo_uri) as client:
        db = client[EXPECTED_DB]
        results = {d: daily.process_day(UPath(expected), d, db, run_id="expected") for d in DAYS}
    assert all(r["status"] == "loaded" and r["files"] == FILES_PER_DAY for r in results.values()), results

    where = "backfill_id IS NOT NULL"
    states = cluster.wait_runs("listens_daily", where, (), expected=len(DAYS), timeout_s=420)
    runs = cluster.query("SELECT run_id, data_interval_start FROM dag_run "
                         f"WHERE dag_id = 'listens_daily' AND {where}")
    assert sorted(start.date() for _, start in runs) == DAYS, runs
    assert set(states.values()) == {"success"}, states
    tis = _assert_all_succeeded(cluster, "listens_daily", list(states))
    clean = [ti for ti in tis if ti[1] == "clean"]
    assert len(clean) == len(DAYS) * FILES_PER_DAY, clean
    hosts = {ti[5] for ti in clean}
    assert hosts == {"worker1", "worker2"}, (
        f"mapped clean tasks ran on {hosts}, not on both workers: {clean}\n"
        + cluster.diagnostics("listens_daily", list(states)))

    want = _registry(mongo_uri, EXPECTED_DB, "daily")
    assert sorted(want) == [f"listens/date={d}/daily.parquet" for d in DAYS]
    assert _registry(mongo_uri, AIRFLOW_DB, "daily") == want
    prefixes = tuple(f"{p}/date={d}" for d in DAYS for p in ("listens", "quarantine/daily"))
    assert _files(lake, prefixes) == _files(expected, prefixes)
    assert not list((lake / "work" / "listens_daily").rglob("*.parquet")), "staged files left behind"

    # every run the cluster made (the scheduler's own latest-interval run included) succeeded
    cluster.wait_runs("listens_daily", "TRUE", (), expected=0, timeout_s=120)
    everything = cluster.query("SELECT dag_id, run_id, state FROM dag_run")
    assert all(r[2] == "success" for r in everything), everything
