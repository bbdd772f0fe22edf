"""Benchmark: the lake import (clean + partition) against a straightforward pandas implementation.

Both run on the same generated Last.fm-1K-format archive, each in its own subprocess, so the
peak RSS of each is measured separately (``wait4`` rusage). Prints rows/s, seconds, peak RSS and
the ratio ours/pandas. Targets (issue 2): >= 3x the pandas baseline; the ``lastfm1k`` preset
(19.15M lines) in <= 3 min with peak RSS <= 4 GB on a 2-core machine.

    python bench/lake_import.py                     # custom preset, 2M lines
    python bench/lake_import.py --events 500000     # quicker
    python bench/lake_import.py --preset lastfm1k   # the full 19.15M lines
    python bench/lake_import.py --skip-baseline     # ours only

The sample is generated once into ``data/bench/`` and reused. Results are appended to
``bench/results/lake_import.jsonl``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

TARGET_RATIO = 3.0
TARGET_SECONDS_LASTFM1K = 180
TARGET_RSS_GB = 4.0


# --------------------------------------------------------------------------------------------
# workers (run in subprocesses)
# --------------------------------------------------------------------------------------------

def worker_ours(archive: Path, work: Path, mongo_uri: str) -> dict:
    """The real import steps: the raw file is placed as the download would, then clean + partition."""
    from upath import UPath

    from musicrec import stores
    from musicrec.lake import download, importer

    root = UPath(work / "lake")
    download.download(archive.as_uri(), root / "raw" / "bench")  # a local copy, not timed below
    db = stores.mongo_database(stores.mongo_client(mongo_uri), "bench")
    started = time.monotonic()
    cleaned = importer.clean_raw(root, "bench")
    t_clean = time.monotonic() - started
    parted = importer.partition_clean(root, "bench", db, run_id="bench")
    seconds = time.monotonic() - started
    return {"lines": cleaned["lines"], "rows": parted["rows"], "partitions": parted["partitions"],
            "quarantined": cleaned["quarantined_total"], "duplicates": parted["duplicates"],
            "seconds": seconds, "clean_seconds": t_clean}


def worker_pandas(archive: Path, work: Path) -> dict:
    """A straightforward pandas implementation of the same steps.

    Read the TSV with ``read_csv`` in chunks, clean each chunk, append each chunk's rows to
    per-date files, then load each date, sort it, drop duplicates and write Parquet.
    """
    import tarfile

    import pandas as pd

    from musicrec.ids import derived_track_id

    started = time.monotonic()
    names = ["user_id", "ts", "artist_id", "artist_name", "track_id", "track_name"]
    spool = work / "spool"
    out = work / "listens"
    spool.mkdir(parents=True)
    lines = rows_clean = 0
    cache: dict[tuple[str, str], str] = {}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if not member.name.endswith("userid-timestamp-artid-artname-traid-traname.tsv"):
                continue
            stream = tar.extractfile(member)
            reader = pd.read_csv(stream, sep="\t", header=None, names=names, dtype=str, chunksize=500_000,
                                 quoting=csv.QUOTE_NONE, on_bad_lines="skip", encoding="utf-8",
                                 encoding_errors="replace", keep_default_na=False)
            for chunk in reader:
                lines += len(chunk)
                for col in names:
                    chunk[col] = chunk[col].str.strip()
                chunk["ts"] = pd.to_datetime(chunk["ts"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce", utc=True)
                ok = (chunk["user_id"] != "") & chunk["ts"].notna() & ((chunk["track_name"] != "") |
                                                                       (chunk["track_id"] != ""))
                chunk = chunk[ok].copy()
                missing = chunk["track_id"] == ""
                if missing.any():
                    def derive(row: pd.Series) -> str:
                        key = (row["artist_name"], row["track_name"])
                        if key not in cache:
                            cache[key] = derived_track_id(*key)
                        return cache[key]

                    chunk.loc[missing, "track_id"] = chunk.loc[missing].apply(derive, axis=1)
                chunk["date"] = chunk["ts"].dt.strftime("%Y-%m-%d")
                rows_clean += len(chunk)
                for day, part in chunk.groupby("date"):
                    path = spool / f"{day}.csv"
                    part.drop(columns="date").to_csv(path, mode="a", header=not path.exists(), index=False,
                                                     sep="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
    rows = partitions = 0
    for path in sorted(spool.glob("*.csv")):
        day = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, escapechar="\\",
                          keep_default_na=False)
        day["ts"] = pd.to_datetime(day["ts"], utc=True)
        day = day.sort_values(["user_id", "ts"]).drop_duplicates(["user_id", "ts", "track_id"])
        target = out / f"date={path.stem}"
        target.mkdir(parents=True)
        day.to_parquet(target / "pandas.parquet", index=False, compression="zstd")
        rows += len(day)
        partitions += 1
    return {"lines": lines, "rows": rows, "partitions": partitions, "seconds": time.monotonic() - started}


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_worker(kind: str, archive: Path, work: Path, mongo_uri: str, env: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--archive", str(archive), "--work", str(work),
           "--mongo", mongo_uri]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} worker failed ({status})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 1024 / 1024  # ru_maxrss is KiB on Linux
    return result


def ensure_sample(preset: str, events: int | None, seed: int) -> tuple[Path, dict]:
    from musicrec.sample import generate

    label = preset if preset != "custom" else f"custom-{events}"
    out = REPO / "data" / "bench" / f"{label}-seed{seed}"
    manifest = out / "sample.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        print(f"sample: reusing {out} ({meta['lines_total']:,} lines)")
        return out / "lastfm-dataset-1K.tar.gz", meta
    started = time.monotonic()
    res = generate(preset=preset, out_dir=out, seed=seed, with_lrclib=False, with_landing=False,
                   n_events=events if preset == "custom" else None)
    print(f"sample: generated {res.counts['lines_total']:,} lines in {time.monotonic() - started:.1f} s -> {out}")
    return res.archive, res.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="custom", help="custom (default, --events lines), small or lastfm1k")
    parser.add_argument("--events", type=int, default=2_000_000, help="lines of the custom preset")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--worker", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mongo", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.work.mkdir(parents=True, exist_ok=True)
        result = (worker_ours(args.archive, args.work, args.mongo) if args.worker == "ours"
                  else worker_pandas(args.archive, args.work))
        print(json.dumps(result))
        return

    archive, meta = ensure_sample(args.preset, args.events, args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="bench-lake-", dir=REPO / "data" / "bench"))
    env = dict(os.environ) | {"MUSICREC_STAGING_DIR": str(scratch / "staging"), "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    mongo = subprocess.Popen([str(Path(sys.executable).parent / "secantusd-py"), "--host", "127.0.0.1",
                              "--port", str(port), "--storage-path", ":memory:", "--log-level", "WARNING"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise SystemExit("secantusd-py did not start")
            time.sleep(0.2)
        uri = f"mongodb://127.0.0.1:{port}/"
        print(f"machine: {os.cpu_count()} cores; input {archive.stat().st_size / 1e6:.0f} MB, "
              f"{meta['lines_total']:,} lines")
        ours = _run_worker("ours", archive, scratch / "ours", uri, env)
        print(f"ours:   {ours['seconds']:7.1f} s  {ours['lines'] / ours['seconds']:>10,.0f} lines/s  "
              f"peak RSS {ours['peak_rss_gb']:.2f} GB  ({ours['rows']:,} rows, {ours['partitions']} partitions, "
              f"{ours['quarantined']} quarantined, {ours['duplicates']} duplicates)")
        pandas = None
        if not args.skip_baseline:
            pandas = _run_worker("pandas", archive, scratch / "pandas", uri, env)
            print(f"pandas: {pandas['seconds']:7.1f} s  {pandas['lines'] / pandas['seconds']:>10,.0f} lines/s  "
                  f"peak RSS {pandas['peak_rss_gb']:.2f} GB  ({pandas['rows']:,} rows, "
                  f"{pandas['partitions']} partitions)")
            ratio = pandas["seconds"] / ours["seconds"]
            verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
            print(f"speed-up ours/pandas: {ratio:.2f}x ({verdict} the {TARGET_RATIO:.0f}x target); "
                  f"peak RSS ours/pandas: {ours['peak_rss_gb'] / pandas['peak_rss_gb']:.2f}")
        if args.preset == "lastfm1k":
            ok = ours["seconds"] <= TARGET_SECONDS_LASTFM1K and ours["peak_rss_gb"] <= TARGET_RSS_GB
            print(f"lastfm1k target (<= {TARGET_SECONDS_LASTFM1K} s, <= {TARGET_RSS_GB} GB): "
                  f"{'met' if ok else 'MISSED'}")
        results = REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        with open(results / "lake_import.jsonl", "a") as fh:
            fh.write(json.dumps({"at": datetime.now(UTC).isoformat(), "preset": args.preset,
                                 "lines": meta["lines_total"], "ours": ours, "pandas": pandas}) + "\n")
    finally:
        mongo.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
