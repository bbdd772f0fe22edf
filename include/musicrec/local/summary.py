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


METRICS = ("ndcg_at_10", "precision_at_10", "recall_at_10", "coverage", "users")


def collect_models(mongo_uri: str, milvus_uri: str, k: int = 10) -> dict[str, Any]:
    """Catalog counts, the active ALS model and one sample user's top-k (read from the stores)."""
    from pymilvus import MilvusClient

    from musicrec import recommend
    from musicrec.als.publish import active_model
    from musicrec.lyrics.queue import status_counts

    with MongoClient(mongo_uri, serverSelectionTimeoutMS=3000) as client:
        db = client["musicrec"]
        out: dict[str, Any] = {"songs": db["songs"].count_documents({}), "users": db["users"].count_documents({}),
                               "model": active_model(db), "user_id": None, "recommendations": [],
                               "lyrics": status_counts(db)}
        if out["model"] is None:
            return out
        user = db["users"].find_one({"model_version": out["model"]["_id"]}, {"_id": 1}, sort=[("_id", 1)])
        if user is not None:
            from upath import UPath

            out["user_id"] = user["_id"]
            out["recommendations"] = recommend.home(user["_id"], k, db=db, milvus=MilvusClient(uri=milvus_uri),
                                                    root=UPath(services.data_dir() / "lake"))
    return out


def print_models(models: dict[str, Any]) -> None:
    print(f"mongo catalog: {models['songs']:,} songs, {models['users']:,} users")
    print("  lyrics: " + ", ".join(f"{k} {v:,}" for k, v in models["lyrics"].items()))
    doc = models["model"]
    if doc is None:
        print("ALS: no active model")
        return
    window = doc["window"]
    print(f"ALS model {doc['_id']} (active; window {window['start']:%Y-%m-%d} .. {window['end']:%Y-%m-%d}, "
          f"{doc['matrix']['users']} users x {doc['matrix']['items']:,} tracks, {doc['matrix']['nnz']:,} pairs, "
          f"backend {doc['backend']['used']}, {doc['backend']['seconds_per_iteration']} s/iteration)")
    print(f"  {'metric':<17}{'ALS':>10}{'popularity':>12}")
    for name in METRICS:
        als, pop = doc["metrics"]["als"][name], doc["metrics"]["popularity"][name]
        print(f"  {name:<17}{als:>10.4g}{pop:>12.4g}")
    print(f"  lift ndcg@10      {doc['metrics'].get('lift_ndcg_at_10')}x   -> Milvus alias music_collection -> "
          f"{doc['collection']}")
    if models["user_id"]:
        print(f"top-{len(models['recommendations'])} for {models['user_id']} (played tracks excluded):")
        for n, rec in enumerate(models["recommendations"], 1):
            print(f"  {n:>2}. {rec.artist} - {rec.title}   ({rec.score:.3f})")


def print_audit(lake: Path) -> dict[str, Any] | None:
    """The newest store_audit report in the lake: its summary table and path."""
    import json

    from musicrec.audit import report

    reports = sorted((lake / "audit").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        print("store audit: no report yet")
        return None
    doc = json.loads(reports[-1].read_text())
    print(f"store audit ({doc['run_id']}): {'clean' if doc['clean'] else str(doc['remaining']) + ' open findings'}")
    for line in report.table(doc).splitlines():
        print("  " + line)
    print(f"  report: {reports[-1].with_name('report.html')}")
    return doc


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
    print(f"mongo: mongodb://127.0.0.1:{services.mongo_port()}/musicrec")
    models = collect_models(f"mongodb://127.0.0.1:{services.mongo_port()}/",
                            f"http://127.0.0.1:{services.milvus_port()}")
    print_models(models)
    summary["models"] = {"active": models["model"]["_id"] if models["model"] else None,
                         "recommendations": len(models["recommendations"])}
    audit = print_audit(lake)
    summary["audit"] = {"clean": audit["clean"], "findings": audit["findings"]} if audit else None
    print("UI: `make airflow` then http://127.0.0.1:8080")
    return summary


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print_summary()
