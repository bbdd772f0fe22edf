"""Data the UI tests put in Mongo and the lake (issue 17): two ALS versions published one after the other
through the real publish steps (the older one retained, a roll-back target), one lyrics-embedding model,
an audit report in the lake and songs in every lyrics status. Nothing here is a hard-coded answer: the
tests read it back through ``musicrec.views`` and the pages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from musicrec import registry, vectors
from musicrec.als import publish
from musicrec.als.model import factors_table
from musicrec.als.params import collection_name
from musicrec.audit import report as audit_report
from tests import memory_store

DIM = 4
OLD, NEW = "20090405_aaaaaa", "20090505_bbbbbb"
USERS = [f"u{i:03d}" for i in range(6)]
ITEMS = [f"t{i:04d}" for i in range(30)]


def register_memory() -> None:
    vectors.register("memory", memory_store)


def unregister_memory() -> None:
    vectors.unregister("memory")
    memory_store.reset()


def memory_store_of(name: str):
    from musicrec import stores

    return stores.vector_store(stores.VectorStoreSettings("memory", path=name))


def model(db, lake: Path, version: str, end: datetime, ndcg: tuple[float, float], *, seed: int = 1,
          title: str = "") -> dict[str, Any]:
    """A trained candidate with its artifacts in the lake and the registry (as ``train`` leaves it)."""
    rng = np.random.default_rng(seed)
    artifacts, records = [], []
    for kind, col, ids in (("item_factors", "track_id", ITEMS), ("user_factors", "user_id", USERS)):
        rel = f"models/als/{version}/{kind}.parquet"
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        vecs = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        pq.write_table(factors_table(np.array(ids, dtype=object), vecs, col), lake / rel)
        data = (lake / rel).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        artifacts.append({"path": rel, "bytes": len(data), "sha256": sha, "kind": kind, "rows": len(ids)})
        records.append(registry.PartitionRecord(rel, "als", end.strftime("%Y-%m-%d"), "als_training", len(ids),
                                                len(data), sha, f"run_{version}"))
    registry.record(db, records)
    db["models"].insert_one({
        "_id": version, "kind": "als", "status": "candidate", "params": {"factors": DIM, "iterations": 3,
                                                                          "note": title},
        "artifacts": artifacts, "window": {"start": end - timedelta(days=90), "end": end},
        "inputs": [{"path": f"listens/date={end:%Y-%m-%d}/import.parquet", "sha256": "0" * 64}],
        "metrics": {"als": {"ndcg_at_10": ndcg[0], "precision_at_10": 0.05}, "popularity": {"ndcg_at_10": ndcg[1]},
                    "lift_ndcg_at_10": round(ndcg[0] / ndcg[1], 4)},
        "backend": {"used": "implicit-cpu", "seconds_per_iteration": 0.0123, "reason": "test"},
        "collection": collection_name(version), "run_id": f"manual__{version}", "trained_at": datetime.now(UTC)})
    return {"version": version, "item_factors": artifacts[0]["path"], "user_factors": artifacts[1]["path"],
            "factors": DIM}


def publish_two(db, root, lake: Path, *stores, title: str = "") -> None:
    """OLD published, then NEW published over it (OLD retained: its collection stays)."""
    for version, end, ndcg, seed in ((OLD, datetime(2009, 4, 5, tzinfo=UTC), (0.08, 0.03), 1),
                                     (NEW, datetime(2009, 5, 5, tzinfo=UTC), (0.09, 0.025), 2)):
        summary = model(db, lake, version, end, ndcg, seed=seed, title=title)
        db["models"].update_one({"_id": version}, {"$set": {"gate": publish.gate(db, version, min_lift=1.1)}})
        publish.publish(db, root, summary, *stores)


def embedding_model(db, collection: str = "lyrics_embeddings_tiny") -> None:
    db["models"].insert_one({"_id": "embedding_tiny", "kind": "embedding", "model": "tiny-bge", "model_id": "tiny@1",
                             "dim": 8, "sparse": True, "collection": collection, "alias": "lyrics_embeddings",
                             "status": "active", "model_slug": "tiny"})
    db["songs"].insert_many([{"_id": f"e{i}", "embedding": {"model_id": "tiny@1"}, "lyrics": {"status": "found"}}
                             for i in range(3)])


def audit_run(root, run_id: str, *, findings: int, title: str = "", generated_at: str | None = None) -> dict:
    """A report as ``store_audit`` writes it (``musicrec.audit.report.build`` + ``write``)."""
    parts = [{"scope": "als", "plans": [{"name": "als_items", "info": {"note": title}, "before": {
        "counts": {"milvus:music_collection_v1" + title: {"missing": findings}} if findings else {},
        "total": findings, "examples": {"milvus:music_collection_v1|missing": [f"t{i}" for i in range(findings)]},
        "expected": "lake:item_factors.parquet", "rows": {}}}]}]
    doc = audit_report.build(run_id, parts, mode="audit", grace_minutes=60, max_findings=0)
    if generated_at:
        doc["generated_at"] = generated_at
    audit_report.write(root, doc)
    return doc


def lyrics_songs(db, now: datetime) -> None:
    """Songs in every lyrics status; three errors with their next attempts (one due, one later, one exhausted)."""
    docs = []
    for i, status in enumerate(["found"] * 4 + ["not_found"] * 2 + ["instrumental"]):
        docs.append({"_id": f"s{i}", "title": f"song {i}", "artist": "a", "plays_total": 10 - i,
                     "lyrics": {"status": status, "provider": "dump" if i % 2 else "api", "fetched_at": now}})
    docs.append({"_id": "p0", "title": "pending", "artist": "a", "plays_total": 1})
    for n, (delta, attempts) in enumerate(((-5, 1), (30, 2), (60, 5))):
        docs.append({"_id": f"err{n}", "title": f"<b>err {n}</b>", "artist": "a", "plays_total": 1,
                     "lyrics": {"status": "error", "provider": "api", "attempts": attempts, "last_error": "HTTP 503",
                                "next_attempt_at": now + timedelta(minutes=delta), "fetched_at": now}})
    db["songs"].insert_many(docs)
