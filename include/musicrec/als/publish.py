"""Gate and blue/green publish of an ALS model (design §4, issue 3).

Publish order — each step idempotent, so a crash anywhere leaves the previous model serving and a
re-run completes the publish:

1. item factors → ``music_collection_v<version>`` in Milvus (upsert, stale ids deleted), index built
   with the requested params and checked by a search, collection loaded;
2. the same vectors → the Qdrant mirror collection of the same name;
3. user factors → ``users.latent_vector`` + ``model_version``; users this model does not contain get
   both unset. Readers pair a user's vector with *its* version's collection, so the pair is
   consistent at every moment (``musicrec.recommend``);
4. the aliases (Milvus, then Qdrant) swap to the new collection;
5. the model document becomes ``active``, the previous active one ``retired``;
6. collections older than the previous version are dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymongo import UpdateOne
from pymongo.database import Database

from musicrec.als.model import MODELS
from musicrec.als.params import ALIAS, collection_name
from musicrec.catalog import listens
from musicrec.lake.storage import LakePath
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd

log = logging.getLogger(__name__)

IN_CHUNK = 500


class GateRefused(Exception):
    """The candidate must not replace the active model; the message is the reason, ``decision`` the numbers."""

    def __init__(self, message: str, decision: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.decision = (decision or {}) | {"passed": False, "reason": message}


def active_model(db: Database, kind: str = "als") -> dict[str, Any] | None:
    docs = list(db[MODELS].find({"kind": kind, "status": "active"}))
    if len(docs) > 1:
        log.warning("%d active %s models: %s", len(docs), kind, [d["_id"] for d in docs])
    return max(docs, key=lambda d: (listens.utc(d["window"]["end"]), d["_id"])) if docs else None


def gate(db: Database, version: str, *, min_lift: float = 1.1, tolerance: float = 0.02, force: bool = False
         ) -> dict[str, Any]:
    """Decide whether ``version`` may be published; raises :class:`GateRefused` with the reason.

    There is no bypass: the same rules decide whether or not a version of that name was ever published
    (a re-run of the active version compares it with itself and passes unless ``min_lift`` refuses it).
    The returned decision (and ``GateRefused.decision``) carries every number the rules used."""
    doc = db[MODELS].find_one({"_id": version})
    if doc is None:
        raise LookupError(f"no model document {version}: train first")
    als = float(doc["metrics"]["als"]["ndcg_at_10"])
    pop = float(doc["metrics"]["popularity"]["ndcg_at_10"])
    active = active_model(db)
    decision: dict[str, Any] = {
        "version": version, "status": doc.get("status"), "ndcg_at_10": als, "popularity_ndcg_at_10": pop,
        "min_lift": min_lift, "tolerance": tolerance, "force": force, "active": active["_id"] if active else None,
        "window_end": listens.utc(doc["window"]["end"]).isoformat()}
    if active is not None:
        decision["active_ndcg_at_10"] = float(active["metrics"]["als"]["ndcg_at_10"])
        decision["active_window_end"] = listens.utc(active["window"]["end"]).isoformat()
    if als < min_lift * pop:
        raise GateRefused(f"ALS ndcg@10 {als:.4f} < min_lift {min_lift} x popularity {pop:.4f}: the active model "
                          "stays", decision)
    if active is not None:
        a_end, c_end = listens.utc(active["window"]["end"]), listens.utc(doc["window"]["end"])
        if a_end > c_end and not force:
            raise GateRefused(f"the active model {active['_id']} covers a later window (ends {a_end:%Y-%m-%d} > "
                              f"{c_end:%Y-%m-%d}); pass force=true to replace it anyway", decision)
        a_ndcg = decision["active_ndcg_at_10"]
        if als < a_ndcg - tolerance:
            raise GateRefused(f"ALS ndcg@10 {als:.4f} < the active model {active['_id']}'s {a_ndcg:.4f} - tolerance "
                              f"{tolerance}: the active model stays", decision)
    return decision | {"passed": True, "reason": "passed"}


def record_gate(db: Database, decision: dict[str, Any]) -> bool:
    """Store the decision (numbers included) on the model document — only a candidate's: a live or
    retired version's document is immutable and keeps the decision that published it. True if stored."""
    res = db[MODELS].update_one({"_id": decision["version"], "status": {"$nin": ["active", "retired"]}},
                                {"$set": {"gate": decision | {"decided_at": datetime.now(UTC)}}})
    return bool(res.matched_count)


# ----------------------------------------------------------------------------- steps

def publish_milvus(client, root: LakePath, version: str, item_rel: str, *, index: mv.IndexSpec | None = None
                   ) -> dict[str, Any]:
    name = collection_name(version)
    path = listens.local_file(root, item_rel)
    counts = mv.upsert_parquet(client, name, path, id_col="track_id")
    desc = mv.ensure_index(client, name, index or mv.IndexSpec())
    recall = mv.verify_search(client, name, path)
    if mv.count(client, name) != counts["rows"]:
        raise mv.VectorStoreError(f"{name} holds {mv.count(client, name)} rows, expected {counts['rows']}")
    return counts | {"collection": name, "index": {k: desc.get(k) for k in ("index_type", "metric_type")},
                     "recall": recall}


def publish_qdrant(client, root: LakePath, version: str, item_rel: str) -> dict[str, Any]:
    name = collection_name(version)
    counts = qd.upsert_parquet(client, name, listens.local_file(root, item_rel), payload={"model_version": version})
    return counts | {"collection": name}


def publish_users(db: Database, root: LakePath, version: str, user_rel: str, *, batch_size: int = 500
                  ) -> dict[str, int]:
    """``latent_vector`` + ``model_version`` for the model's users (diff writes); unset both elsewhere."""
    now = datetime.now(UTC)
    written = 0
    total = 0
    for ids, vecs in mv.read_vectors(listens.local_file(root, user_rel), "user_id", "vector", IN_CHUNK):
        if not np.isfinite(vecs).all():
            raise mv.VectorStoreError(f"{user_rel} holds NaN/inf vectors")
        written += write_user_vectors(db, version, ids, vecs, batch_size=batch_size, now=now)
        total += len(ids)
    stale = db["users"].update_many({"model_version": {"$exists": True, "$ne": version}},
                                    {"$unset": {"latent_vector": "", "model_version": ""},
                                     "$set": {"updated_at": now}}).modified_count
    log.info("users: %d vectors of model %s (%d written), %d users of other models unset", total, version, written,
             stale)
    return {"users": total, "written": written, "unset": stale}


def write_user_vectors(db: Database, version: str, ids: list[str], vecs: np.ndarray, *, batch_size: int = 500,
                       now: datetime | None = None) -> int:
    """``latent_vector`` + ``model_version`` of ``ids`` (<= 500: one ``$in``), written only where they
    differ; returns how many documents were written (publish, and the audit's repair)."""
    now = now or datetime.now(UTC)
    existing = {d["_id"]: d for d in db["users"].find({"_id": {"$in": ids}}, {"latent_vector": 1,
                                                                              "model_version": 1})}
    ops = []
    for uid, vec in zip(ids, vecs.tolist(), strict=True):
        cur = existing.get(uid)
        if cur is None or cur.get("model_version") != version or cur.get("latent_vector") != vec:
            ops.append(UpdateOne({"_id": uid}, {"$set": {"latent_vector": vec, "model_version": version,
                                                         "updated_at": now}}, upsert=True))
    for start in range(0, len(ops), batch_size):
        db["users"].bulk_write(ops[start:start + batch_size], ordered=False)
    return len(ops)


def swap_aliases(milvus_client, qdrant_client, version: str, dim: int) -> dict[str, Any]:
    name = collection_name(version)
    have = mv.vector_dim(milvus_client, name)
    if have != dim:
        raise mv.DimensionMismatch(f"{name} has dim {have}, the model has {dim}")
    previous = mv.swap_alias(milvus_client, ALIAS, name)
    q_previous = qd.swap_alias(qdrant_client, ALIAS, name) if qdrant_client is not None else None
    return {"alias": ALIAS, "collection": name, "previous": previous, "qdrant_previous": q_previous}


def activate(db: Database, version: str) -> dict[str, Any]:
    """Model ``version`` active (remembering the model it replaced), every other active ALS model retired."""
    now = datetime.now(UTC)
    doc = db[MODELS].find_one({"_id": version}, {"status": 1, "previous_version": 1})
    if doc is None:
        raise LookupError(f"no model document {version}")
    if doc.get("status") != "active":
        previous = active_model(db)
        db[MODELS].update_one({"_id": version}, {"$set": {
            "status": "active", "activated_at": now, "previous_version": previous["_id"] if previous else None}})
        doc = db[MODELS].find_one({"_id": version}, {"status": 1, "previous_version": 1})
    retired = db[MODELS].update_many({"kind": "als", "status": "active", "_id": {"$ne": version}},
                                     {"$set": {"status": "retired", "retired_at": now}}).modified_count
    return {"version": version, "previous_version": doc.get("previous_version"), "retired": retired}


def cleanup(db: Database, milvus_client, qdrant_client, version: str) -> dict[str, list[str]]:
    """Drop collections older than the previous model (keeps the active and the one it replaced)."""
    doc = db[MODELS].find_one({"_id": version}, {"previous_version": 1, "status": 1})
    if doc is None or doc.get("status") != "active":
        raise RuntimeError(f"model {version} is not active: refusing to drop collections")
    keep = {collection_name(version)}
    if doc.get("previous_version"):
        keep.add(collection_name(doc["previous_version"]))
    out = {"milvus": mv.drop_versions(milvus_client, ALIAS, keep)}
    if qdrant_client is not None:
        out["qdrant"] = qd.drop_versions(qdrant_client, ALIAS, keep)
    return out


def publish(db: Database, root: LakePath, summary: dict[str, Any], milvus_client, qdrant_client, *,
            index: mv.IndexSpec | None = None) -> dict[str, Any]:
    """All steps in order (tests, scripts); the DAG runs them as separate tasks."""
    version = summary["version"]
    out = {"milvus": publish_milvus(milvus_client, root, version, summary["item_factors"], index=index)}
    if qdrant_client is not None:
        out["qdrant"] = publish_qdrant(qdrant_client, root, version, summary["item_factors"])
    out["users"] = publish_users(db, root, version, summary["user_factors"])
    out["alias"] = swap_aliases(milvus_client, qdrant_client, version, summary["factors"])
    out["activate"] = activate(db, version)
    out["cleanup"] = cleanup(db, milvus_client, qdrant_client, version)
    return out
