"""Gate and blue/green publish of an ALS model (design §4, issues 3 and 14).

A version is immutable once published (``musicrec.als.model``). Publish order — each step
idempotent, so a kill anywhere leaves readers on the old model or the new one and a re-run completes:

1. ``upsert``: item factors → the version's collection (``music_collection_v<version>``; see
   :func:`placement`); the live collection is never written: a re-run of the live version only checks it;
2. ``index``: the index with the requested params, checked by a recall search, loaded. An index change
   on the *live* version builds a side collection ``..._ix<hex of the index spec>`` (steps 1–2 there),
   swapped in at step 5: the alias target is never released or dropped while it is the target;
3. ``mirror``: the same vectors → every mirror store's collection of the same name (the Qdrant mirror);
4. ``users``: user factors → ``users.latent_vectors.<version>`` (one key per version, beside the live
   one's; nobody reads it until the swap), and what each of those users played in the model's window →
   ``users.played_tracks.<version>`` (one lake scan per version, so serving excludes played tracks
   with the same read that fetches the vector, never scanning the lake per request);
5. ``swap``: the aliases (every store in order: Milvus, then Qdrant) move to the new collection — *the flip*: readers take
   the version from the alias target and read that version's user vector, so items and users switch
   together;
6. ``activate``: the model document becomes ``active``, the previous active one ``retired``;
7. ``cleanup``: collections older than the previous version are dropped, and their versions' user
   vectors and played tracks unset with them.

The steps take the vector stores in order (``musicrec.vectors.VectorStore``, or raw clients, which are
wrapped): the first serves (placement, index, recall check), the others mirror it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymongo import UpdateOne
from pymongo.database import Database

from musicrec.als.model import MODELS
from musicrec.als.params import (
    ALIAS,
    PLAYED,
    USER_VECTORS,
    collection_name,
    played_field,
    refreshed_field,
    user_vector_field,
    version_of,
)
from musicrec.lake import reader
from musicrec.lake.storage import LakePath
from musicrec.vectors import Capability, as_store, as_stores, has
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd  # noqa: F401 - kept for callers that reach it through here
from musicrec.vectors.base import DimensionMismatch, VectorStoreError, read_vectors

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
    return max(docs, key=lambda d: (reader.utc(d["window"]["end"]), d["_id"])) if docs else None


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
        "window_end": reader.utc(doc["window"]["end"]).isoformat()}
    if active is not None:
        decision["active_ndcg_at_10"] = float(active["metrics"]["als"]["ndcg_at_10"])
        decision["active_window_end"] = reader.utc(active["window"]["end"]).isoformat()
    if als < min_lift * pop:
        raise GateRefused(f"ALS ndcg@10 {als:.4f} < min_lift {min_lift} x popularity {pop:.4f}: the active model "
                          "stays", decision)
    if active is not None:
        a_end, c_end = reader.utc(active["window"]["end"]), reader.utc(doc["window"]["end"])
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


def placement(store, version: str, index: mv.IndexSpec | None = None) -> dict[str, Any]:
    """Where version ``version`` goes in the serving store: ``{"collection", "live"}``.

    * the alias already serves this version with the same index → that collection, ``live`` (checked,
      never written);
    * it serves this version with another index → a side collection ``<name>_ix<tag>`` (built, verified,
      swapped in later: the live one is never released);
    * otherwise the plain ``music_collection_v<version>`` (not served: it may be written and re-indexed).

    A store without explicit indexes (no ``Capability.INDEX``) has one index per collection: the alias
    target of this version is always the live one.
    """
    store = as_store(store)
    spec = index or mv.IndexSpec()
    target = store.alias_target(ALIAS)
    if target is not None and version_of(target) == version:
        if not has(store, Capability.INDEX):
            return {"collection": target, "live": True}
        current = store.describe_index(target)
        if current is not None and store.same_index(current, spec):
            return {"collection": target, "live": True}
        return {"collection": collection_name(version, index_tag=index_tag(spec)), "live": False,
                "side_of": target}
    return {"collection": collection_name(version), "live": False}


def publish_vectors(store, root: LakePath, version: str, item_rel: str, *, index: mv.IndexSpec | None = None
                    ) -> dict[str, Any]:
    """Step ``upsert``: the item vectors into the serving store's collection for the version (:func:`placement`)."""
    store = as_store(store)
    where = placement(store, version, index)
    name = where["collection"]
    path = reader.local_file(root, item_rel)
    if where["live"]:
        store.ready(name)
        rows = sum(len(ids) for ids, _ in read_vectors(path, "track_id", "vector", 5000))
        if store.count(name) != rows:
            raise VectorStoreError(f"the live collection {name} holds {store.count(name)} rows, its artifact "
                                   f"{rows}: run store_audit (a live collection is never rewritten by a publish)")
        return where | {"rows": rows, "deleted": 0, "written": 0}
    return where | store.upsert_parquet(name, path, payload={"model_version": version})


def publish_index(store, root: LakePath, name: str, item_rel: str, *, index: mv.IndexSpec | None = None
                  ) -> dict[str, Any]:
    """Step ``index``: build (or keep) the index of ``name``, check it with a recall search, load it. A
    store that builds no explicit index (no ``Capability.INDEX``) has nothing to do here."""
    store = as_store(store)
    if not has(store, Capability.INDEX):
        store.ready(name)
        return {"collection": name, "index": None, "recall": None}
    spec = index or mv.IndexSpec()
    if name == store.alias_target(ALIAS):
        current = store.describe_index(name)
        if current is None or not store.same_index(current, spec):
            raise VectorStoreError(f"{name} is the alias target: its index is never rebuilt in place "
                                   "(placement() builds a side collection)")
    path = reader.local_file(root, item_rel)
    desc = store.build_index(name, spec)
    recall = store.verify_search(name, path)
    return {"collection": name, "index": {k: desc.get(k) for k in ("index_type", "metric_type")}, "recall": recall}


def publish_milvus(store, root: LakePath, version: str, item_rel: str, *, index: mv.IndexSpec | None = None
                   ) -> dict[str, Any]:
    """Steps ``upsert`` + ``index`` on the serving store (tests, the audit's rebuild)."""
    store = as_store(store)
    counts = publish_vectors(store, root, version, item_rel, index=index)
    out = publish_index(store, root, counts["collection"], item_rel, index=index)
    if store.count(counts["collection"]) != counts["rows"]:
        raise VectorStoreError(f"{counts['collection']} holds {store.count(counts['collection'])} rows, "
                               f"expected {counts['rows']}")
    return counts | out


publish_primary = publish_milvus


def publish_mirror(store, root: LakePath, version: str, item_rel: str, name: str | None = None) -> dict[str, Any]:
    """Step ``mirror``: the same vectors into a mirror store's collection of the same name (diff writes
    where the store has them: a re-run of a live version writes nothing); the payload carries the version
    where the store keeps one."""
    name = name or collection_name(version)
    counts = as_store(store).upsert_parquet(name, reader.local_file(root, item_rel),
                                            payload={"model_version": version})
    return counts | {"collection": name}


publish_qdrant = publish_mirror


def publish_users(db: Database, root: LakePath, version: str, user_rel: str, *, batch_size: int = 500
                  ) -> dict[str, int]:
    """Step ``users``: ``latent_vectors.<version>`` for the model's users (diff writes), then their
    ``played_tracks.<version>`` (:func:`publish_played`). Other versions' keys are untouched (the live
    one keeps serving until the swap); users not in the model get no key."""
    now = datetime.now(UTC)
    written = 0
    model_users: set[str] = set()
    for ids, vecs in read_vectors(reader.local_file(root, user_rel), "user_id", "vector", IN_CHUNK):
        if not np.isfinite(vecs).all():
            raise VectorStoreError(f"{user_rel} holds NaN/inf vectors")
        written += write_user_vectors(db, version, ids, vecs, batch_size=batch_size, now=now)
        model_users.update(ids)
    played = publish_played(db, root, version, model_users, batch_size=batch_size, now=now)
    log.info("users: %d vectors of model %s (%d written), played tracks of %d (%d written)", len(model_users),
             version, written, played["users"], played["written"])
    return {"users": len(model_users), "written": written, "played_written": played["written"]}


def played_in_window(db: Database, root: LakePath, version: str) -> Iterator[tuple[str, list[str]]]:
    """(user_id, sorted distinct track ids) of every user with any event in model ``version``'s window,
    in user order — one DuckDB scan of the window, streamed in chunks."""
    doc = db[MODELS].find_one({"_id": version}, {"window": 1})
    if doc is None:
        raise LookupError(f"no model document {version}")
    con, _ = reader.open_span(root, db, reader.utc(doc["window"]["start"]), reader.utc(doc["window"]["end"]))
    try:
        cur = con.execute("SELECT user_id, list_sort(list(DISTINCT track_id)) FROM events "
                          "WHERE user_id IS NOT NULL AND track_id IS NOT NULL GROUP BY user_id ORDER BY user_id")
        while rows := cur.fetchmany(IN_CHUNK):
            yield from ((uid, list(tracks)) for uid, tracks in rows)
    finally:
        con.close()


def publish_played(db: Database, root: LakePath, version: str, users: set[str], *, batch_size: int = 500,
                   now: datetime | None = None) -> dict[str, int]:
    """``played_tracks.<version>`` of the model's ``users``: the tracks each played in the model's window
    (``[]`` for a model user the window no longer shows). Diff writes; once the version has been
    published (``active``/``retired``) its sets are only filled where missing, never changed — a
    live model is not rewritten in place, even if the lake's window changed since."""
    now = now or datetime.now(UTC)
    status = (db[MODELS].find_one({"_id": version}, {"status": 1}) or {}).get("status")
    fixed = status in ("active", "retired")
    seen: set[str] = set()
    written = 0
    chunk: dict[str, list[str]] = {}
    for uid, tracks in played_in_window(db, root, version):
        if uid in users:
            chunk[uid] = tracks
            seen.add(uid)
        if len(chunk) >= IN_CHUNK:
            written += write_played(db, version, chunk, fixed=fixed, batch_size=batch_size, now=now)
            chunk = {}
    for uid in sorted(users - seen):
        chunk[uid] = []
        if len(chunk) >= IN_CHUNK:
            written += write_played(db, version, chunk, fixed=fixed, batch_size=batch_size, now=now)
            chunk = {}
    if chunk:
        written += write_played(db, version, chunk, fixed=fixed, batch_size=batch_size, now=now)
    return {"users": len(users), "written": written}


def write_played(db: Database, version: str, played: dict[str, list[str]], *, fixed: bool = False,
                 batch_size: int = 500, now: datetime | None = None) -> int:
    """``played_tracks.<version>`` of the users in ``played`` (<= 500: one ``$in``), written where they
    differ (``fixed``: only where missing); returns how many documents were written."""
    now = now or datetime.now(UTC)
    field = played_field(version)
    existing = {d["_id"]: (d.get(PLAYED) or {}).get(version)
                for d in db["users"].find({"_id": {"$in": list(played)}}, {field: 1})}
    ops = []
    for uid, tracks in played.items():
        have = existing.get(uid)
        if have == tracks or (fixed and have is not None):
            continue
        ops.append(UpdateOne({"_id": uid}, {"$set": {field: tracks, "updated_at": now}}, upsert=True))
    for start in range(0, len(ops), batch_size):
        db["users"].bulk_write(ops[start:start + batch_size], ordered=False)
    return len(ops)


def write_user_vectors(db: Database, version: str, ids: list[str], vecs: np.ndarray, *, batch_size: int = 500,
                       now: datetime | None = None, kind: str = USER_VECTORS) -> int:
    """``<kind>.<version>`` of ``ids`` (<= 500: one ``$in``), written only where they differ; returns
    how many documents were written. ``kind``: ``latent_vectors`` (the publish, the audit's repair) or
    ``refreshed_vectors`` (a fold-in, :mod:`musicrec.als.foldin`)."""
    now = now or datetime.now(UTC)
    field = f"{kind}.{version}"
    existing = {d["_id"]: (d.get(kind) or {}).get(version)
                for d in db["users"].find({"_id": {"$in": ids}}, {field: 1})}
    ops = []
    for uid, vec in zip(ids, vecs.tolist(), strict=True):
        if existing.get(uid) != vec:
            ops.append(UpdateOne({"_id": uid}, {"$set": {field: vec, "updated_at": now}}, upsert=True))
    for start in range(0, len(ops), batch_size):
        db["users"].bulk_write(ops[start:start + batch_size], ordered=False)
    return len(ops)


def prune_user_vectors(db: Database, versions: list[str]) -> int:
    """Unset ``latent_vectors.<v>``, ``refreshed_vectors.<v>`` and ``played_tracks.<v>`` of ``versions``
    everywhere (their collections are gone); returns how many user documents changed."""
    pruned = 0
    for v in versions:
        fields = (user_vector_field(v), refreshed_field(v), played_field(v))
        pruned += db["users"].update_many({"$or": [{f: {"$exists": True}} for f in fields]},
                                          {"$unset": dict.fromkeys(fields, "")}).modified_count
    return pruned


def swap_aliases(stores, version: str, dim: int, name: str | None = None) -> dict[str, Any]:
    """Step ``swap``: the flip, in every store in order (the serving one first). ``name`` defaults to the
    version's plain collection name. Returns the serving store's previous target as ``previous`` and
    each mirror's as ``<kind>_previous``."""
    stores = as_stores(stores)
    name = name or collection_name(version)
    if version_of(name) != version:
        raise ValueError(f"collection {name} does not hold version {version}")
    have = stores[0].collection_dim(name)
    if have != dim:
        raise DimensionMismatch(f"{name} has dim {have}, the model has {dim}")
    out: dict[str, Any] = {"alias": ALIAS, "collection": name}
    for n, store in enumerate(stores):
        out["previous" if n == 0 else f"{store.kind}_previous"] = store.swap_alias(ALIAS, name)
    return out


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


def cleanup(db: Database, stores, version: str) -> dict[str, Any]:
    """Step ``cleanup``: drop collections older than the previous model in every store (keeps the active
    one's serving collection and the one it replaced; never an alias target) and the user vectors of
    every version that no longer has a collection in the serving store. Returns the dropped per store kind."""
    stores = as_stores(stores)
    doc = db[MODELS].find_one({"_id": version}, {"previous_version": 1, "status": 1, "collection": 1})
    if doc is None or doc.get("status") != "active":
        raise RuntimeError(f"model {version} is not active: refusing to drop collections")
    kept_versions = {version} | ({doc["previous_version"]} if doc.get("previous_version") else set())
    # every collection of a kept version stays: after an index swap the replaced one may still be
    # searched by a request that resolved the alias just before the swap; the next publish drops it
    out: dict[str, Any] = {}
    for store in stores:
        out[store.kind] = store.drop_versions(ALIAS, [n for n in store.versions(ALIAS) if version_of(n) in kept_versions])
    served = {version_of(n) for n in stores[0].versions(ALIAS)}
    stale = sorted({d["_id"] for d in db[MODELS].find({"kind": "als"}, {"_id": 1})} - kept_versions - served)
    out["users_pruned"] = prune_user_vectors(db, stale)
    return out


def activate_and_cleanup(db: Database, stores, version: str, collection: str | None = None) -> dict[str, Any]:
    """The DAG's ``activate`` task: :func:`activate`, then :func:`cleanup` (its result as ``dropped``)."""
    out = activate(db, version, collection)
    out["dropped"] = cleanup(db, stores, version)
    return out


Step = tuple[str, Callable[[dict[str, Any]], Any]]


def steps(db: Database, root: LakePath, summary: dict[str, Any], *stores, index: mv.IndexSpec | None = None
          ) -> list[Step]:
    """The publish steps in order, as (name, fn(state) -> result); ``state`` carries the collection
    chosen by ``upsert`` to the later steps (the DAG passes it by XCom).

    ``stores``: the vector stores in order (stores, clients, None or sequences of them): the first
    serves (placement, index, recall check), the others are mirrors (step ``mirror``, one result per
    store kind), and every one gets the swap and the cleanup."""
    version = summary["version"]
    stores_ = as_stores(*stores)
    primary, mirrors = stores_[0], stores_[1:]

    def upsert(state):
        state["upsert"] = publish_vectors(primary, root, version, summary["item_factors"], index=index)
        return state["upsert"]

    def name(state) -> str:
        return state["upsert"]["collection"]

    def mirror(state) -> dict[str, Any]:
        return {m.kind: publish_mirror(m, root, version, summary["item_factors"], name(state)) for m in mirrors}

    out: list[Step] = [
        ("upsert", upsert),
        ("index", lambda st: publish_index(primary, root, name(st), summary["item_factors"], index=index)),
    ]
    if mirrors:
        out.append(("mirror", mirror))
    out += [
        ("users", lambda st: publish_users(db, root, version, summary["user_factors"])),
        ("swap", lambda st: swap_aliases(stores_, version, summary["factors"], name(st))),
        ("activate", lambda st: activate(db, version, name(st))),
        ("cleanup", lambda st: cleanup(db, stores_, version)),
    ]
    return out


def publish(db: Database, root: LakePath, summary: dict[str, Any], *stores, index: mv.IndexSpec | None = None,
            stop_after: str | None = None) -> dict[str, Any]:
    """All steps in order (tests, scripts); the DAG runs them as separate tasks. ``stores`` as in
    :func:`steps`. ``stop_after``: end after that step, as a kill would (tests)."""
    state: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for step_name, fn in steps(db, root, summary, *stores, index=index):
        out[step_name] = fn(state)
        if step_name == stop_after:
            break
    out["milvus"] = out["upsert"] | out.get("index", {})
    return out
