"""ALS scope (design §4): the active model document and its lake artifacts are the truth.

* ``als_items``: every row of the ``item_factors`` artifact ↔ Milvus ``music_collection_v<version>``
  ↔ the Qdrant mirror, and nothing else there. Fingerprint ``<model version>:<xxh3 of the float32
  vector bytes>`` — the version comes from the collection name (Milvus) or the point payload
  (Qdrant); the vector digest catches a vector overwritten in place. Plus structural checks: the
  collection exists, has the model's dimension, and the ``music_collection`` alias points at it.
* ``als_users``: every user of the ``user_factors`` artifact has ``latent_vectors.<active version>``
  (the model's dimension, the artifact's values); no other user has that key. Other versions' keys
  (the previous model, kept for roll-back; a candidate mid-publish) are not this scope's business.
  Fingerprint ``<version>:<dim>:<digest>``; a length difference is a ``dimension_mismatch``.

The serving collection is the model document's ``collection`` (an index change swaps in a side
collection ``..._ix<hex>``). Repair writes from the artifact (Milvus/Qdrant subset upserts, ``users``
``$set``), deletes orphans (``$unset`` for users) and rebuilds a missing collection or a wrong alias
with the ALS publish helpers. It refuses to act when the active model changed since the audit listed
the stores — its version *or* its fingerprint (artifacts' sha256, inputs, serving collection).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pymongo.database import Database

from musicrec import registry
from musicrec.als import publish
from musicrec.als.params import ALIAS, USER_VECTORS, collection_name, user_vector_field
from musicrec.audit.core import (
    AuditContext,
    Finding,
    ScopePlan,
    Target,
    check_alias,
    check_collection,
    chunks,
    page_size,
)
from musicrec.lake.reader import local_file
from musicrec.vectors import Capability, Record, VectorStore, has
from musicrec.vectors.base import read_vectors

USERS = "users"


def digest(vec: Any) -> str:
    """xxh3 of the vector as float32 bytes (Milvus, Qdrant, Mongo and Parquet agree bit for bit)."""
    return xxhash.xxh3_64_hexdigest(np.asarray(vec, dtype=np.float32).tobytes())


def _parquet_pairs(path: Path, id_col: str, prefix: str) -> Iterator[tuple[str, str]]:
    for ids, vecs in read_vectors(path, id_col, "vector", 5000):
        for key, row in zip(ids, vecs, strict=True):
            yield key, f"{prefix}:{xxhash.xxh3_64_hexdigest(row.tobytes())}"


def _subset(path: Path, id_col: str, ids: list[str]):
    table = pq.read_table(path, filters=[(id_col, "in", ids)]) if ids else None
    return table


def _subset_lookup(path: Path, id_col: str, prefix: str, ids: list[str]) -> dict[str, str]:
    table = _subset(path, id_col, ids)
    if table is None or table.num_rows == 0:
        return {}
    vecs = np.asarray(pc.list_flatten(table.column("vector")).to_numpy(zero_copy_only=False), dtype=np.float32)
    vecs = vecs.reshape(table.num_rows, -1)
    return {k: f"{prefix}:{xxhash.xxh3_64_hexdigest(v.tobytes())}"
            for k, v in zip(table.column(id_col).to_pylist(), vecs, strict=True)}


def _subset_file(path: Path, id_col: str, ids: list[str], spill_dir: str | None) -> Path:
    fd, name = tempfile.mkstemp(prefix="audit-repair-", suffix=".parquet", dir=spill_dir)
    os.close(fd)
    pq.write_table(_subset(path, id_col, ids), name)
    return Path(name)


def plans(ctx: AuditContext) -> list[ScopePlan]:
    doc = publish.active_model(ctx.db)
    if doc is None:
        return [ScopePlan("als_items", skipped="no active ALS model"),
                ScopePlan("als_users", skipped="no active ALS model")]
    return model_plans(ctx, doc)


def model_plans(ctx: AuditContext, doc: dict[str, Any]) -> list[ScopePlan]:
    """The scope's plans for model document ``doc``: the active one (:func:`plans`), or a retained one that
    a roll-back checks before serving it again (``musicrec.als.rollback``; its alias finding is expected
    there: the alias serves another version until the roll-back swaps it)."""
    db = ctx.db
    version = doc["_id"]
    dim = int(doc["params"]["factors"])
    arts = {a["kind"]: a["path"] for a in doc.get("artifacts", [])}
    name = doc.get("collection") or collection_name(version)
    info = {"model": version, "collection": name, "dim": dim}
    seen = model_fingerprint(doc, ctx)

    def guard() -> str | None:
        now = publish.active_model(db)
        if now is None or now["_id"] != version:
            return (f"the active ALS model changed from {version} to {now and now['_id']} since the audit: "
                    "not repairing")
        if (fp := model_fingerprint(now, ctx)) != seen:
            return (f"the active ALS model {version} changed since the audit (fingerprint {seen[:12]} -> {fp[:12]}: "
                    "artifacts, inputs or serving collection): not repairing")
        return None

    out = []
    for scope, kind in (("als_items", "item_factors"), ("als_users", "user_factors")):
        rel = arts.get(kind)
        try:
            path = local_file(ctx.root, rel) if rel else None
        except FileNotFoundError:
            path = None
        if path is None:
            out.append(ScopePlan(scope, info=info | {"artifact": rel}, structural=[
                Finding(scope, "lake", "missing", rel or f"{version}/{kind}",
                        detail=f"model {version}: the {kind} artifact is not in the lake; see the lake scope")]))
            continue
        plan = _items(ctx, version, dim, path, name) if scope == "als_items" else _users(ctx, version, dim, path)
        plan.info = info | {"artifact": rel}
        plan.guard = guard
        out.append(plan)
    return out


# ----------------------------------------------------------------------------- items

def model_fingerprint(doc: dict[str, Any], ctx: AuditContext) -> str:
    """What the audit compared against: the artifacts' sha256 (registry and document), the inputs' and the
    serving collection. Equal version ids with another fingerprint mean the model was touched meanwhile
    (the repair guard). Alias targets are left out: the repair itself may fix a wrong alias."""
    arts = sorted((a["path"], a.get("sha256"), (registry.get(ctx.db, a["path"]) or {}).get("sha256"))
                  for a in doc.get("artifacts", []))
    blob = json.dumps({"artifacts": arts, "collection": doc.get("collection"),
                       "inputs": sorted((i["path"], i.get("sha256")) for i in doc.get("inputs", []))},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _items(ctx: AuditContext, version: str, dim: int, path: Path, name: str) -> ScopePlan:
    scope = "als_items"
    plan = ScopePlan(scope, expected_name=f"lake:{path.name}",
                     expected=lambda: _parquet_pairs(path, "track_id", version),
                     expected_lookup=lambda ids: _subset_lookup(path, "track_id", version, ids))
    for n, store in enumerate(ctx.vector_stores()):
        plan.targets.append(_store_target(ctx, plan, store, version, dim, name, path, serving=n == 0))
    return plan


def _fingerprint(store: VectorStore, version: str) -> Callable[[Record], str]:
    """``<version>:<digest>``: the version from the row's payload where the store keeps one (what the
    publish wrote there), else from the collection's name (a fixed-schema store such as Milvus)."""
    if has(store, Capability.PAYLOAD):
        return lambda r: f"{(r.payload or {}).get('model_version')}:{digest(r.vector)}"
    return lambda r: f"{version}:{digest(r.vector)}"


def _store_target(ctx: AuditContext, plan: ScopePlan, store: VectorStore, version: str, dim: int, name: str,
                  path: Path, *, serving: bool) -> Target:
    """One vector store's target: structural checks (collection, dimension, alias), then its rows."""
    key = f"{store.kind}:{name}"
    alias_key = f"{store.kind}:alias {ALIAS}"
    # the serving store is rebuilt by the publish's own upsert + index; a mirror by its mirror step
    rebuild = ((lambda: publish.publish_primary(store, ctx.root, version, _rel(plan))) if serving
               else (lambda: publish.publish_mirror(store, ctx.root, version, _rel(plan), name)))
    if check_collection(plan, key, name, exists=store.has_collection(name), dim=dim,
                        have_dim=lambda: store.collection_dim(name), rebuild=rebuild,
                        hint="re-run als_training with force=true"):
        store.ready(name)
    check_alias(plan, alias_key, ALIAS, name, store.alias_target(ALIAS), lambda: store.swap_alias(ALIAS, name))
    fp = _fingerprint(store, version)
    page = page_size(store)

    def lookup(ids: list[str]) -> dict[str, str]:
        return {r.key: fp(r) for r in store.fetch(name, ids, vectors=True)}

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        sub = _subset_file(path, "track_id", ids, ctx.spill_dir)
        try:
            store.upsert_parquet(name, sub, payload={"model_version": version}, delete_missing=False)
        finally:
            sub.unlink(missing_ok=True)
        return {"upsert": ids}

    def delete(ids: list[str]) -> dict[str, list[str]]:
        store.delete(name, ids)
        return {"delete": ids}

    return Target(key, stream=lambda: ((r.key, fp(r)) for r in store.scan(name, vectors=True, batch=page)),
                  lookup=lookup, upsert=upsert, delete=delete)


def _rel(plan: ScopePlan) -> str:
    return plan.info["artifact"]


# ----------------------------------------------------------------------------- users

def _user_fp(doc: dict[str, Any], version: str) -> str:
    vec = (doc.get(USER_VECTORS) or {}).get(version)
    return f"{version}:{len(vec) if vec is not None else None}:{digest(vec) if vec else None}"


def _dims(expected: str, actual: str) -> str:
    return "dimension_mismatch" if expected.split(":")[1] != actual.split(":")[1] else "stale"


def _users(ctx: AuditContext, version: str, dim: int, path: Path) -> ScopePlan:
    db: Database = ctx.db
    prefix = f"{version}:{dim}"
    store = "mongo:users"
    field = user_vector_field(version)
    has_vector = {field: {"$exists": True}}

    def stream():
        for d in db[USERS].find(has_vector, {field: 1}, batch_size=2000):
            yield d["_id"], _user_fp(d, version)

    def lookup(ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in chunks(ids):
            for d in db[USERS].find({"_id": {"$in": part}, **has_vector}, {field: 1}):
                out[d["_id"]] = _user_fp(d, version)
        return out

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        table = _subset(path, "user_id", ids)
        vecs = np.asarray(pc.list_flatten(table.column("vector")).to_numpy(zero_copy_only=False), np.float32)
        publish.write_user_vectors(db, version, table.column("user_id").to_pylist(),
                                   vecs.reshape(table.num_rows, -1))
        return {"set_latent_vector": ids}

    def delete(ids: list[str]) -> dict[str, list[str]]:
        for part in chunks(ids):
            db[USERS].update_many({"_id": {"$in": part}}, {"$unset": {field: ""}})
        return {"unset_latent_vector": ids}

    plan = ScopePlan("als_users", expected_name=f"lake:{path.name}",
                     expected=lambda: _parquet_pairs(path, "user_id", prefix),
                     expected_lookup=lambda ids: _subset_lookup(path, "user_id", prefix, ids))
    plan.targets.append(Target(store, stream=stream, lookup=lookup, upsert=upsert, delete=delete, classify=_dims))
    return plan
