"""Gate and blue/green publish of an ALS model (design §4, issues 3 and 14).

A version is immutable once published (``musicrec.als.model``). Publish order — each step
idempotent, so a kill anywhere leaves readers on the old model or the new one and a re-run completes:

1. ``upsert``: item factors → the version's collection (``music_collection_v<version>``; see
   :func:`placement`); the live collection is never written: a re-run of the live version only checks it;
2. ``index``: the index with the requested params, checked by a recall search, loaded. An index change
   on the *live* version builds a side collection ``..._ix<hex of the index spec>`` (steps 1–2 there),
   swapped in at step 5: the alias target is never released or dropped while it is the target;
3. ``mirror``: the same vectors → the Qdrant mirror collection of the same name;
4. ``users``: user factors → ``users.latent_vectors.<version>`` (one key per version, beside the live
   one's; nobody reads it until the swap);
5. ``swap``: the aliases (Milvus, then Qdrant) move to the new collection — *the flip*: readers take
   the version from the alias target and read that version's user vector, so items and users switch
   together;
6. ``activate``: the model document becomes ``active``, the previous active one ``retired``;
7. ``cleanup``: collections older than the previous version are dropped, and their versions' user
   vectors unset with them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymongo import UpdateOne
from pymongo.database import Database

from musicrec.als.model import MODELS
from musicrec.als.params import ALIAS, USER_VECTORS, collection_name, user_vector_field, version_of
from musicrec.lake import reader as listens  # the lake reader (issue 15 renamed the module)
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

def index_tag(spec: mv.IndexSpec) -> str:
    blob = json.dumps([spec.index_type, spec.metric_type, spec.params or {}], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def placement(client, version: str, index: mv.IndexSpec | None = None) -> dict[str, Any]:
    """Where version ``version`` goes: ``{"collection", "live"}``.

    * the alias already serves this version with the same index → that collection, ``live`` (checked,
      never written);
    * it serves this version with another index → a side collection ``<name>_ix<tag>`` (built, verified,
      swapped in later: the live one is never released);
    * otherwise the plain ``music_collection_v<version>`` (not served: it may be written and re-indexed).
    """
    spec = index or mv.IndexSpec()
    target = mv.alias_target(client, ALIAS)
    if target is not None and version_of(target) == version:
        current = mv.describe_index(client, target)
        if current is not None and mv.same_index(current, spec):
            return {"collection": target, "live": True}
        return {"collection": collection_name(version, index_tag=index_tag(spec)), "live": False,
                "side_of": target}
    return {"collection": collection_name(version), "live": False}


def publish_vectors(client, root: LakePath, version: str, item_rel: str, *, index: mv.IndexSpec | None = None
                    ) -> dict[str, Any]:
    """Step ``upsert``: the item vectors into the version's collection (:func:`placement`)."""
    where = placement(client, version, index)
    name = where["collection"]
    path = listens.local_file(root, item_rel)
    if where["live"]:
        mv.ensure_loaded(client, name)
        rows = sum(len(ids) for ids, _ in mv.read_vectors(path, "track_id", "vector", 5000))
        if mv.count(client, name) != rows:
            raise mv.VectorStoreError(f"the live collection {name} holds {mv.count(client, name)} rows, its artifact "
                                      f"{rows}: run store_audit (a live collection is never rewritten by a publish)")
        return where | {"rows": rows, "deleted": 0, "written": 0}
    return where | mv.upsert_parquet(client, name, path, id_col="track_id")


def publish_index(client, root: LakePath, name: str, item_rel: str, *, index: mv.IndexSpec | None = None
                  ) -> dict[str, Any]:
    """Step ``index``: build (or keep) the index of ``name``, check it with a recall search, load it."""
    spec = index or mv.IndexSpec()
    if name == mv.alias_target(client, ALIAS):
        current = mv.describe_index(client, name)
        if current is None or not mv.same_index(current, spec):
            raise mv.VectorStoreError(f"{name} is the alias target: its index is never rebuilt in place "
                                      "(placement() builds a side collection)")
    path = listens.local_file(root, item_rel)
    desc = mv.ensure_index(client, name, spec)
    recall = mv.verify_search(client, name, path)
    return {"collection": name, "index": {k: desc.get(k) for k in ("index_type", "metric_type")}, "recall": recall}


def publish_milvus(client, root: LakePath, version: str, item_rel: str, *, index: mv.IndexSpec | None = None
                   ) -> dict[str, Any]:
    """Steps ``upsert`` + ``index`` (tests, the audit's rebuild)."""
    counts = publish_vectors(client, root, version, item_rel, index=index)
    out = publish_index(client, root, counts["collection"], item_rel, index=index)
    if mv.count(client, counts["collection"]) != counts["rows"]:
        raise mv.VectorStoreError(f"{counts['collection']} holds {mv.count(client, counts['collection'])} rows, "
                                  f"expected {counts['rows']}")
    return counts | out


def publish_qdrant(client, root: LakePath, version: str, item_rel: str, name: str | None = None) -> dict[str, Any]:
    """Step ``mirror``: the same vectors into the Qdrant collection of the same name (diff writes: a
    re-run of a live version writes nothing)."""
    name = name or collection_name(version)
    counts = qd.upsert_parquet(client, name, listens.local_file(root, item_rel), payload={"model_version": version})
    return counts | {"collection": name}


def publish_users(db: Database, root: LakePath, version: str, user_rel: str, *, batch_size: int = 500
                  ) -> dict[str, int]:
    """Step ``users``: ``latent_vectors.<version>`` for the model's users (diff writes). Other versions'
    keys are untouched (the live one keeps serving until the swap); users not in the model get no key."""
    now = datetime.now(UTC)
    written = 0
    total = 0
    for ids, vecs in mv.read_vectors(listens.local_file(root, user_rel), "user_id", "vector", IN_CHUNK):
        if not np.isfinite(vecs).all():
            raise mv.VectorStoreError(f"{user_rel} holds NaN/inf vectors")
        written += write_user_vectors(db, version, ids, vecs, batch_size=batch_size, now=now)
        total += len(ids)
    log.info("users: %d vectors of model %s (%d written)", total, version, written)
    return {"users": total, "written": written}


def write_user_vectors(db: Database, version: str, ids: list[str], vecs: np.ndarray, *, batch_size: int = 500,
                       now: datetime | None = None) -> int:
    """``latent_vectors.<version>`` of ``ids`` (<= 500: one ``$in``), written only where they differ;
    returns how many documents were written (publish, and the audit's repair)."""
    now = now or datetime.now(UTC)
    field = user_vector_field(version)
    existing = {d["_id"]: (d.get(USER_VECTORS) or {}).get(version)
                for d in db["users"].find({"_id": {"$in": ids}}, {field: 1})}
    ops = []
    for uid, vec in zip(ids, vecs.tolist(), strict=True):
        if existing.get(uid) != vec:
            ops.append(UpdateOne({"_id": uid}, {"$set": {field: vec, "updated_at": now}}, upsert=True))
    for start in range(0, len(ops), batch_size):
        db["users"].bulk_write(ops[start:start + batch_size], ordered=False)
    return len(ops)


def prune_user_vectors(db: Database, versions: list[str]) -> int:
    """Unset ``latent_vectors.<v>`` of ``versions`` everywhere (their collections are gone)."""
    pruned = 0
    for v in versions:
        field = user_vector_field(v)
        pruned += db["users"].update_many({field: {"$exists": True}}, {"$unset": {field: ""}}).modified_count
    return pruned


def swap_aliases(milvus_client, qdrant_client, version: str, dim: int, name: str | None = None) -> dict[str, Any]:
    """Step ``swap``: the flip. ``name`` defaults to the version's plain collection name."""
    name = name or collection_name(version)
    if version_of(name) != version:
        raise ValueError(f"collection {name} does not hold version {version}")
    have = mv.vector_dim(milvus_client, name)
    if have != dim:
        raise mv.DimensionMismatch(f"{name} has dim {have}, the model has {dim}")
    previous = mv.swap_alias(milvus_client, ALIAS, name)
    q_previous = qd.swap_alias(qdrant_client, ALIAS, name) if qdrant_client is not None else None
    return {"alias": ALIAS, "collection": name, "previous": previous, "qdrant_previous": q_previous}


def activate(db: Database, version: str, collection: str | None = None) -> dict[str, Any]:
    """Step ``activate``: model ``version`` active (remembering the model it replaced), every other active
    ALS model retired. ``collection``: where it is served now — the one field of a live version's document
    that may change (an index change swaps in a side collection). Legacy single-model user fields
    (``latent_vector``, ``model_version``, before per-version keys) are removed."""
    now = datetime.now(UTC)
    doc = db[MODELS].find_one({"_id": version}, {"status": 1, "previous_version": 1, "collection": 1})
    if doc is None:
        raise LookupError(f"no model document {version}")
    if doc.get("status") != "active":
        previous = active_model(db)
        db[MODELS].update_one({"_id": version}, {"$set": {
            "status": "active", "activated_at": now, "previous_version": previous["_id"] if previous else None}})
        doc = db[MODELS].find_one({"_id": version}, {"status": 1, "previous_version": 1, "collection": 1})
    if collection and doc.get("collection") != collection:
        db[MODELS].update_one({"_id": version}, {"$set": {"collection": collection}})
    retired = db[MODELS].update_many({"kind": "als", "status": "active", "_id": {"$ne": version}},
                                     {"$set": {"status": "retired", "retired_at": now}}).modified_count
    db["users"].update_many({"$or": [{"latent_vector": {"$exists": True}}, {"model_version": {"$exists": True}}]},
                            {"$unset": {"latent_vector": "", "model_version": ""}})
    return {"version": version, "previous_version": doc.get("previous_version"), "retired": retired}


def cleanup(db: Database, milvus_client, qdrant_client, version: str) -> dict[str, Any]:
    """Step ``cleanup``: drop collections older than the previous model (keeps the active one's serving
    collection and the one it replaced; never an alias target) and the user vectors of every version
    that no longer has a collection."""
    doc = db[MODELS].find_one({"_id": version}, {"previous_version": 1, "status": 1, "collection": 1})
    if doc is None or doc.get("status") != "active":
        raise RuntimeError(f"model {version} is not active: refusing to drop collections")
    kept_versions = {version} | ({doc["previous_version"]} if doc.get("previous_version") else set())
    # every collection of a kept version stays: after an index swap the replaced one may still be
    # searched by a request that resolved the alias just before the swap; the next publish drops it
    out: dict[str, Any] = {"milvus": mv.drop_versions(milvus_client, ALIAS, [
        n for n in mv.versions(milvus_client, ALIAS) if version_of(n) in kept_versions])}
    if qdrant_client is not None:
        out["qdrant"] = qd.drop_versions(qdrant_client, ALIAS, [
            n for n in qd.versions(qdrant_client, ALIAS) if version_of(n) in kept_versions])
    served = {version_of(n) for n in mv.versions(milvus_client, ALIAS)}
    stale = sorted({d["_id"] for d in db[MODELS].find({"kind": "als"}, {"_id": 1})} - kept_versions - served)
    out["users_pruned"] = prune_user_vectors(db, stale)
    return out


Step = tuple[str, Callable[[dict[str, Any]], Any]]


def steps(db: Database, root: LakePath, summary: dict[str, Any], milvus_client, qdrant_client, *,
          index: mv.IndexSpec | None = None) -> list[Step]:
    """The publish steps in order, as (name, fn(state) -> result); ``state`` carries the collection
    chosen by ``upsert`` to the later steps (the DAG passes it by XCom)."""
    version = summary["version"]

    def upsert(state):
        state["upsert"] = publish_vectors(milvus_client, root, version, summary["item_factors"], index=index)
        return state["upsert"]

    def name(state) -> str:
        return state["upsert"]["collection"]

    out: list[Step] = [
        ("upsert", upsert),
        ("index", lambda st: publish_index(milvus_client, root, name(st), summary["item_factors"], index=index)),
    ]
    if qdrant_client is not None:
        out.append(("mirror", lambda st: publish_qdrant(qdrant_client, root, version, summary["item_factors"],
                                                        name(st))))
    out += [
        ("users", lambda st: publish_users(db, root, version, summary["user_factors"])),
        ("swap", lambda st: swap_aliases(milvus_client, qdrant_client, version, summary["factors"], name(st))),
        ("activate", lambda st: activate(db, version, name(st))),
        ("cleanup", lambda st: cleanup(db, milvus_client, qdrant_client, version)),
    ]
    return out


def publish(db: Database, root: LakePath, summary: dict[str, Any], milvus_client, qdrant_client, *,
            index: mv.IndexSpec | None = None, stop_after: str | None = None) -> dict[str, Any]:
    """All steps in order (tests, scripts); the DAG runs them as separate tasks. ``stop_after``: end
    after that step, as a kill would (tests)."""
    state: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for step_name, fn in steps(db, root, summary, milvus_client, qdrant_client, index=index):
        out[step_name] = fn(state)
        if step_name == stop_after:
            break
    out["milvus"] = out["upsert"] | out.get("index", {})
    return out
