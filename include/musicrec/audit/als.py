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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pymongo.database import Database
from qdrant_client import models

from musicrec import registry
from musicrec.als import publish
from musicrec.als.params import ALIAS, USER_VECTORS, collection_name, user_vector_field
from musicrec.audit.core import (
    MILVUS_PAGE,
    QDRANT_PAGE,
    AuditContext,
    Finding,
    ScopePlan,
    Target,
    check_alias,
    check_collection,
    chunks,
)
from musicrec.ids import point_id
from musicrec.lake.reader import local_file
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd

USERS = "users"


def digest(vec: Any) -> str:
    """xxh3 of the vector as float32 bytes (Milvus, Qdrant, Mongo and Parquet agree bit for bit)."""
    return xxhash.xxh3_64_hexdigest(np.asarray(vec, dtype=np.float32).tobytes())


def _parquet_pairs(path: Path, id_col: str, prefix: str) -> Iterator[tuple[str, str]]:
    for ids, vecs in mv.read_vectors(path, id_col, "vector", 5000):
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
    db = ctx.db
    doc = publish.active_model(db)
    if doc is None:
        return [ScopePlan("als_items", skipped="no active ALS model"),
                ScopePlan("als_users", skipped="no active ALS model")]
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
    if ctx.milvus is not None:
        plan.targets.append(_milvus_target(ctx, plan, version, dim, name, path))
    if ctx.qdrant is not None:
        plan.targets.append(_qdrant_target(ctx, plan, version, dim, name, path))
    return plan


def _milvus_target(ctx: AuditContext, plan: ScopePlan, version: str, dim: int, name: str, path: Path) -> Target:
    client = ctx.milvus
    store = f"milvus:{name}"
    alias_store = f"milvus:alias {ALIAS}"
    hint = "re-run als_training with force=true"
    if check_collection(plan, store, name, exists=client.has_collection(name), dim=dim,
                        have_dim=lambda: mv.vector_dim(client, name), hint=hint,
                        rebuild=lambda: publish.publish_milvus(client, ctx.root, version, _rel(plan))):
        mv.ensure_loaded(client, name)
    check_alias(plan, alias_store, ALIAS, name, mv.alias_target(client, ALIAS),
                lambda: mv.swap_alias(client, ALIAS, name))

    def rows(ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if not client.has_collection(name):
            return out
        for part in chunks(ids):
            for r in client.query(name, filter=f"{mv.ID_FIELD} in {json.dumps(part)}",
                                  output_fields=[mv.ID_FIELD, mv.VECTOR_FIELD], consistency_level="Strong"):
                out[r[mv.ID_FIELD]] = f"{version}:{digest(r[mv.VECTOR_FIELD])}"
        return out

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        sub = _subset_file(path, "track_id", ids, ctx.spill_dir)
        try:
            mv.upsert_parquet(client, name, sub, delete_missing=False)
        finally:
            sub.unlink(missing_ok=True)
        return {"upsert": ids}

    def delete(ids: list[str]) -> dict[str, list[str]]:
        for part in chunks(ids):
            client.delete(name, ids=part)
        if hasattr(client, "flush"):
            client.flush(name)
        return {"delete": ids}

    return Target(store, stream=lambda: ((r[mv.ID_FIELD], f"{version}:{digest(r[mv.VECTOR_FIELD])}")
                                         for r in mv.iter_rows(client, name, [mv.ID_FIELD, mv.VECTOR_FIELD], MILVUS_PAGE)),
                  lookup=rows, upsert=upsert, delete=delete)


def _rel(plan: ScopePlan) -> str:
    return plan.info["artifact"]


def _qdrant_key(record: models.Record) -> str:
    payload = record.payload or {}
    return payload.get("track_id") or f"#{record.id}"  # a point without track_id: keyed by its point id


def _qdrant_fp(record: models.Record) -> str:
    return f"{(record.payload or {}).get('model_version')}:{digest(record.vector)}"


def _qdrant_target(ctx: AuditContext, plan: ScopePlan, version: str, dim: int, name: str, path: Path) -> Target:
    client = ctx.qdrant
    store = f"qdrant:{name}"
    alias_store = f"qdrant:alias {ALIAS}"
    check_collection(plan, store, name, exists=client.collection_exists(name), dim=dim,
                     have_dim=lambda: getattr(client.get_collection(name).config.params.vectors, "size", None),
                     rebuild=lambda: publish.publish_qdrant(client, ctx.root, version, _rel(plan), name),
                     hint="re-run als_training with force=true")
    check_alias(plan, alias_store, ALIAS, name, qd.alias_target(client, ALIAS),
                lambda: qd.swap_alias(client, ALIAS, name))

    def lookup(ids: list[str]) -> dict[str, str]:
        if not client.collection_exists(name):
            return {}
        pids = [i[1:] if i.startswith("#") else point_id(i) for i in ids]
        return {_qdrant_key(r): _qdrant_fp(r)
                for r in client.retrieve(name, ids=pids, with_payload=True, with_vectors=True)}

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        sub = _subset_file(path, "track_id", ids, ctx.spill_dir)
        try:
            qd.upsert_parquet(client, name, sub, payload={"model_version": version}, delete_missing=False)
        finally:
            sub.unlink(missing_ok=True)
        return {"upsert": ids}

    def delete(ids: list[str]) -> dict[str, list[str]]:
        pids = [i[1:] if i.startswith("#") else point_id(i) for i in ids]
        client.delete(name, points_selector=models.PointIdsList(points=pids), wait=True)
        return {"delete": ids}

    return Target(store, stream=lambda: ((_qdrant_key(r), _qdrant_fp(r))
                                         for r in qd.iter_points(client, name, with_vectors=True, batch=QDRANT_PAGE)),
                  lookup=lookup, upsert=upsert, delete=delete)


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
