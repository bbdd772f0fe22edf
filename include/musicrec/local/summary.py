"""The run summary, read from the stores themselves (not from task output)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pymongo import MongoClient

from musicrec.lake.clean import REASONS
from musicrec.local import services


def collect(lake: Path, mongo_uri: str) -> dict[str, Any]:
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=3000) as client:
        db = client["musicrec"]
        parts = list(db["lake_partitions"].find({"_id": {"$regex": "^listens/"}}, {"rows": 1, "date": 1}))
        profiles = db["lake_partitions"].find_one({"_id": "profiles/users.parquet"})
    reasons: Counter[str] = Counter()
    quarantine_root = lake / "quarantine"
    if quarantine_root.exists():
        for f in sorted(quarantine_root.rglob("*.parquet")):
            for reason, count in Counter(pq.read_table(f, columns=["reason"]).column("reason").to_pylist()).items():
                reasons[reason] += count
    dates = sorted(p["date"] for p in parts)
    return {
        "listens_rows": sum(p["rows"] for p in parts),
        "partitions": len(parts),
        "first_date": dates[0] if dates else None,
        "last_date": dates[-1] if dates else None,
        "profiles": profiles["rows"] if profiles else 0,
        "quarantined": {r: reasons.get(r, 0) for r in REASONS} | {
            r: c for r, c in reasons.items() if r not in REASONS},
    }


def print_summary() -> dict[str, Any]:
    lake = services.data_dir() / "lake"
    summary = collect(lake, f"mongodb://127.0.0.1:{services.mongo_port()}/")
    print("\n================ musicrec summary ================")
    print(f"lake: {lake}")
    print(f"  listens rows loaded     {summary['listens_rows']:>10,}")
    print(f"  partitions written      {summary['partitions']:>10,}   ({summary['first_date']} .. "
          f"{summary['last_date']})")
    print(f"  user profiles           {summary['profiles']:>10,}")
    print(f"  rows quarantined        {sum(summary['quarantined'].values()):>10,}")
    for reason, count in summary["quarantined"].items():
        print(f"    {reason:<21} {count:>10,}")
    print(f"mongo: mongodb://127.0.0.1:{services.mongo_port()}/musicrec (lake_partitions registry)")
    print("UI: `make airflow` then http://127.0.0.1:8080")
    return summary


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print_summary()
