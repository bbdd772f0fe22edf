"""Benchmark: listens_daily per-day cost vs the bulk import's per-row cost, and a 30-day backfill.

1. Simulated landing days at Last.fm-1K scale (~12k events/day on average, and a 10x heavy day
   split over 4 files) are processed by the daily library (``musicrec.lake.daily.process_day``:
   plan, clean, merge, registry) — seconds per day and microseconds per row.
2. The bulk import (``clean_raw`` + ``partition_clean``) on a generated archive of
   ``--import-events`` lines in the same run — microseconds per row — so the ratio says what a
   day costs relative to importing the same rows in bulk.
3. With ``--backfill-days N`` (default 30; 0 skips it), the wall time of
   ``airflow backfill create --dag-id listens_daily`` over N simulated days, run by a real
   scheduler (LocalExecutor on a throw-away PostgreSQL database when 127.0.0.1:5432 answers,
   else skipped with the reason).

    python bench/lake_daily.py
    python bench/lake_daily.py --backfill-days 0 --import-events 500000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

DAY_EVENTS = 12_000  # Last.fm-1K: 19.15M events over ~4.4 years ≈ 12k/day


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_mongo() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "secantusd-py"), "--host", "127.0.0.1", "--port",
                             str(port), "--storage-path", ":memory:", "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise SystemExit("secantusd-py did not start")
        time.sleep(0.2)
    return proc, f"mongodb://127.0.0.1:{port}/"


def bench_days(work: Path, mongo_uri: str, seed: int) -> dict:
    from upath import UPath

    from musicrec import stores
    from musicrec.lake import daily
    from musicrec.sample import simulate

    landing = work / "lake" / "landing"
    normal = simulate(3, landing, preset="small", seed=seed, skip_days=0, events_per_day=DAY_EVENTS)
    heavy = simulate(1, landing, preset="small", seed=seed, skip_days=3, events_per_day=10 * DAY_EVENTS,
                     files_per_day=4)
    root = UPath(work / "lake")
    db = stores.mongo_database(stores.mongo_client(mongo_uri), "bench_daily")
    out = {}
    for label, dates in (("average day", normal.dates), ("heavy day (10x, 4 files)", heavy.dates)):
        timings, rows = [], 0
        for d in dates:
            started = time.monotonic()
            result = daily.process_day(root, date.fromisoformat(d), db, run_id="bench")
            timings.append(time.monotonic() - started)
            rows += result["rows"]
        seconds = sum(timings)
        out[label] = {"days": len(dates), "rows_per_day": rows / len(dates), "seconds_per_day": seconds / len(dates),
                      "us_per_row": seconds / rows * 1e6}
    return out


def bench_import(work: Path, mongo_uri: str, events: int, seed: int) -> dict:
    from upath import UPath

    from musicrec import stores
    from musicrec.lake import download, importer
    from musicrec.sample import generate

    sample = generate(preset="custom", n_events=events, out_dir=work / "sample", seed=seed, with_lrclib=False,
                      with_landing=False)
    root = UPath(work / "import-lake")
    download.download(sample.archive.as_uri(), root / "raw" / "bench")
    started = time.monotonic()
    importer.clean_raw(root, "bench")
    result = importer.partition_clean(root, "bench", stores.mongo_database(stores.mongo_client(mongo_uri), "bench_import"), run_id="bench")
    seconds = time.monotonic() - started
    return {"rows": result["rows"], "seconds": seconds, "us_per_row": seconds / result["rows"] * 1e6}


def bench_backfill(work: Path, mongo_uri: str, days: int, seed: int) -> dict | str:
    """A real scheduler (LocalExecutor, throw-away PostgreSQL database) runs the backfill."""
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - report why and skip
        return f"skipped: PostgreSQL on 127.0.0.1:5432 not reachable ({exc.__class__.__name__})"
    from musicrec.sample import simulate

    dbname = f"musicrec_bench_{uuid.uuid4().hex[:8]}"
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{dbname}"')
    lake = work / "backfill-lake"
    res = simulate(days, lake / "landing", preset="small", seed=seed, skip_days=0, events_per_day=DAY_EVENTS)
    env = dict(os.environ) | {
        "AIRFLOW_HOME": str(REPO),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dbname}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(work / "logs"),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # every process must sign and check the task tokens with the same secret
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
        "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "bench_backfill",
        "MUSICREC_STAGING_DIR": str(work / "staging"),
        "MUSICREC_RETRY_DELAY_S": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    procs = []
    try:
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([airflow, "pools", "import", str(REPO / "pools.json")], env=env, check=True,
                       capture_output=True)
        port = _free_port()
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
        logs = work / "proc-logs"
        logs.mkdir()
        for name, cmd in (("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)]),
                          ("dag-processor", [airflow, "dag-processor"]), ("scheduler", [airflow, "scheduler"])):
            procs.append(subprocess.Popen(cmd, env=env, stdout=open(logs / f"{name}.log", "wb"),  # noqa: SIM115
                                          stderr=subprocess.STDOUT, start_new_session=True))
        # wait until the DAG is parsed
        deadline = time.monotonic() + 180
        while subprocess.run([airflow, "dags", "details", "listens_daily"], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline:
                return "failed: listens_daily was not parsed within 180 s"
            time.sleep(2)
        subprocess.run([airflow, "dags", "unpause", "listens_daily"], env=env, check=True, capture_output=True)
        started = time.monotonic()
        subprocess.run([airflow, "backfill", "create", "--dag-id", "listens_daily", "--from-date", res.dates[0],
                        "--to-date", res.dates[-1], "--reprocess-behavior", "completed"], env=env, check=True,
                       capture_output=True)
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname)
        conn.autocommit = True
        deadline = time.monotonic() + 1800
        while True:
            cur = conn.cursor()
            cur.execute("SELECT state, count(*) FROM dag_run WHERE dag_id = 'listens_daily' GROUP BY state")
            states = dict(cur.fetchall())
            if states.get("failed"):
                cur.execute("SELECT run_id, task_id, map_index, state, hostname, try_number FROM task_instance "
                            "WHERE dag_id = 'listens_daily' AND state NOT IN ('success', 'skipped') ORDER BY run_id")
                tis = "\n".join(map(str, cur.fetchall()[:20]))
                logs = sorted((work / "logs").rglob("*"))
                tail = ""
                for path in logs:
                    if path.is_file():
                        text = path.read_text(errors="replace")
                        if "rror" in text:
                            tail = f"--- {path}\n{text[-3000:]}"
                            break
                sched = (work / "proc-logs" / "scheduler.log").read_text(errors="replace")[-3000:]
                return f"failed: {states}\n{tis}\n{tail}\n--- scheduler\n{sched}"
            if states.get("success", 0) >= days:
                break
            if time.monotonic() > deadline:
                return f"timed out: {states}"
            time.sleep(1)
        wall = time.monotonic() - started
        conn.close()
        return {"days": days, "wall_seconds": wall, "seconds_per_day": wall / days}
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import-events", type=int, default=1_000_000)
    parser.add_argument("--backfill-days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    (REPO / "data" / "bench").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-daily-", dir=REPO / "data" / "bench"))
    os.environ["MUSICREC_STAGING_DIR"] = str(work / "staging")
    mongo, uri = _start_mongo()
    try:
        days = bench_days(work, uri, args.seed)
        bulk = bench_import(work, uri, args.import_events, args.seed)
        print(f"bulk import: {bulk['rows']:,} rows in {bulk['seconds']:.1f} s = {bulk['us_per_row']:.2f} us/row")
        for label, d in days.items():
            print(f"{label:26s} {d['rows_per_day']:>9,.0f} rows  {d['seconds_per_day']:6.2f} s/day  "
                  f"{d['us_per_row']:6.2f} us/row = {d['us_per_row'] / bulk['us_per_row']:.1f}x the bulk per-row cost")
        backfill = bench_backfill(work, uri, args.backfill_days, args.seed) if args.backfill_days else "not run"
        if isinstance(backfill, dict):
            print(f"backfill of {backfill['days']} days through the scheduler (LocalExecutor, PostgreSQL): "
                  f"{backfill['wall_seconds']:.0f} s wall = {backfill['seconds_per_day']:.1f} s/day")
        else:
            print(f"backfill: {backfill}")
        results = REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        with open(results / "lake_daily.jsonl", "a") as fh:
            fh.write(json.dumps({"at": datetime.now(UTC).isoformat(), "days": days, "bulk": bulk,
                                 "backfill": backfill}) + "\n")
    finally:
        mongo.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
