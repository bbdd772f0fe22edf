"""Lyrics scope (design §4): ``songs.lyrics`` + the active embedding model are the truth.

Every song with ``lyrics.status == found`` (and plain lyrics, i.e. a ``lyrics.sha256``: a found song
with synced-only or empty lyrics has nothing to embed) must be in the collection the ``lyrics_embeddings`` alias
serves (Milvus and the Qdrant mirror) with fingerprint ``embeddings.store.fingerprint(lyrics.sha256,
model_id)``, and ``songs.embedding`` must record that same pair; songs without found lyrics must be
absent from all three. Structural checks: the collection exists with the model's dimension and the
alias points at it.

Repair re-upserts a missing or stale vector from the delta file ``songs.embedding.shard`` names
(``embeddings.store.read_delta`` → ``upsert_milvus`` / ``upsert_qdrant``: the lyrics helper's own
writers, no copy here) when that row holds the song's *current* lyrics and model; otherwise the song
needs encoding and is flagged for ``lyrics_embeddings`` (which embeds changed lyrics). Orphans older
than the grace period whose song still has no found lyrics are deleted (``embeddings.store.delete_ids``);
an orphan ``songs.embedding`` is ``$unset`` (the contract's "vectors removed" state).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from qdrant_client import models

from musicrec.audit.core import (
    MILVUS_PAGE,
    QDRANT_PAGE,
    AuditContext,
    ScopePlan,
    Target,
    check_alias,
    check_collection,
    chunks,
)
from musicrec.embeddings import store
from musicrec.ids import point_id
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd

SONGS = "songs"
# found songs with plain lyrics (a hash): a found song with synced-only or empty lyrics has nothing to
# embed (lyrics_embeddings skips it), so it must be absent from the vector set like a song without lyrics
FOUND = {"lyrics.status": "found", "lyrics.sha256": {"$type": "string"}}
SCOPE = "lyrics"


def plans(ctx: AuditContext) -> list[ScopePlan]:
    db = ctx.db
    doc = store.active_model(db)
    if doc is None:
        return [ScopePlan(SCOPE, skipped="no active embedding model (lyrics_embeddings has not published one)")]
    model_id, dim = doc["model_id"], int(doc["dim"])
    name = doc.get("collection") or store.ALIAS
    fp = store.fingerprint

    def expected():
        for d in db[SONGS].find(FOUND, {"lyrics.sha256": 1}, batch_size=2000):
            yield d["_id"], fp((d.get("lyrics") or {}).get("sha256"), model_id)

    def songs(ids: list[str], fields: dict[str, int]) -> dict[str, dict[str, Any]]:
        out = {}
        for part in chunks(ids):
            out.update({d["_id"]: d for d in db[SONGS].find({"_id": {"$in": part}}, fields)})
        return out

    def expected_lookup(ids: list[str]) -> dict[str, str]:
        return {k: fp(d["lyrics"]["sha256"], model_id) for k, d in songs(ids, {"lyrics": 1}).items()
                if (d.get("lyrics") or {}).get("status") == "found" and isinstance(d["lyrics"].get("sha256"), str)}

    def guard() -> str | None:
        now = store.active_model(db)
        return None if now is not None and now["_id"] == doc["_id"] else (
            f"the active embedding model changed from {doc['_id']} to {now and now['_id']}: not repairing")

    def from_shards(ids: list[str]) -> tuple[pa.Table | None, list[str]]:
        """The delta rows holding the songs' current vectors, and the ids that need encoding."""
        docs = songs(ids, {"lyrics.sha256": 1, "embedding": 1})
        by_shard: dict[str, list[str]] = defaultdict(list)
        for key in ids:
            d = docs.get(key) or {}
            emb, sha = d.get("embedding") or {}, (d.get("lyrics") or {}).get("sha256")
            if emb.get("shard") and emb.get("lyrics_sha256") == sha and emb.get("model_id") == model_id:
                by_shard[emb["shard"]].append(key)
        tables, found = [], set()
        for shard, keys in sorted(by_shard.items()):
            try:
                t = store.read_delta(ctx.root, shard, keys)
            except FileNotFoundError:
                continue  # the lake scope reports the missing shard
            want = {k: docs[k]["lyrics"]["sha256"] for k in keys}
            rows = []
            for n, (k, s, m) in enumerate(zip(t.column("track_id").to_pylist(), t.column("lyrics_sha256").to_pylist(),
                                              t.column("model_id").to_pylist(), strict=True)):
                if want.get(k) == s and m == model_id and k not in found:  # the row of the current lyrics
                    rows.append(n)
                    found.add(k)
            if rows:
                tables.append(t.take(rows))
        table = pa.concat_tables(tables) if tables else None
        return table, [k for k in ids if k not in found]

    plan = ScopePlan(SCOPE, expected_name="mongo:songs.lyrics", expected=expected, expected_lookup=expected_lookup,
                     guard=guard, info={"model": doc["_id"], "model_id": model_id, "collection": name, "dim": dim})
    if ctx.milvus is not None:
        plan.targets.append(_milvus(ctx, plan, name, dim, from_shards))
    if ctx.qdrant is not None:
        plan.targets.append(_qdrant(ctx, plan, name, dim, from_shards))
    plan.targets.append(_embedding_field(ctx, model_id))
    return [plan]


def _milvus(ctx: AuditContext, plan: ScopePlan, name: str, dim: int, from_shards) -> Target:
    client = ctx.milvus
    key = f"milvus:{name}"
    fields = [store.ID_FIELD, "lyrics_sha256", "model_id"]
    if check_collection(plan, key, name, exists=client.has_collection(name), dim=dim,
                        have_dim=lambda: store.collection_info(client, name)["dim"], rebuild=None,
                        hint="re-run lyrics_embeddings (it rebuilds the collection from the deltas)"):
        mv.ensure_loaded(client, name)
    if client.has_collection(name):
        check_alias(plan, f"milvus:alias {store.ALIAS}", store.ALIAS, name, mv.alias_target(client, store.ALIAS),
                    lambda: mv.swap_alias(client, store.ALIAS, name))

    def fp(r: dict[str, Any]) -> str:
        return store.fingerprint(r["lyrics_sha256"], r["model_id"])

    def lookup(ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in chunks(ids):
            rows = client.query(name, filter=f"{store.ID_FIELD} in {_json(part)}", output_fields=fields,
                                consistency_level="Strong")
            out.update({r[store.ID_FIELD]: fp(r) for r in rows})
        return out

    upsert = _upsert_from_shards(from_shards, lambda table: store.upsert_milvus(client, name, table))

    def delete(ids: list[str]) -> dict[str, list[str]]:
        store.delete_ids(client, None, name, ids)
        return {"delete": ids}

    return Target(key, stream=lambda: ((r[store.ID_FIELD], fp(r)) for r in mv.iter_rows(client, name, fields, MILVUS_PAGE)),
                  lookup=lookup, upsert=upsert, delete=delete)


def _upsert_from_shards(from_shards, write) -> Callable[[list[str]], dict[str, list[str]]]:
    """A store's repair upsert: the rows the songs' delta shards hold are written with ``write`` (one
    store's upsert); the songs without a usable shard row are flagged for ``lyrics_embeddings``."""

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        table, rest = from_shards(ids)
        if table is not None:
            write(table)
        return {"upsert_from_shard": table.column("track_id").to_pylist() if table is not None else [],
                "flagged_needs_encoding": rest}

    return upsert


def _qdrant(ctx: AuditContext, plan: ScopePlan, name: str, dim: int, from_shards) -> Target:
    client = ctx.qdrant
    key = f"qdrant:{name}"
    check_collection(plan, key, name, exists=client.collection_exists(name), dim=dim,
                     have_dim=lambda: getattr(client.get_collection(name).config.params.vectors, "size", None),
                     rebuild=None, hint="re-run lyrics_embeddings (it mirrors the collection again)")
    if client.collection_exists(name):
        check_alias(plan, f"qdrant:alias {store.ALIAS}", store.ALIAS, name, qd.alias_target(client, store.ALIAS),
                    lambda: qd.swap_alias(client, store.ALIAS, name))

    def pair(r: models.Record) -> tuple[str, str]:
        p = r.payload or {}
        return p.get("track_id") or f"#{r.id}", store.fingerprint(p.get("lyrics_sha256"), p.get("model_id"))

    def lookup(ids: list[str]) -> dict[str, str]:
        pids = [i[1:] if i.startswith("#") else point_id(i) for i in ids]
        return dict(pair(r) for r in client.retrieve(name, ids=pids, with_payload=True, with_vectors=False))

    upsert = _upsert_from_shards(from_shards, lambda table: store.upsert_qdrant(client, name, table))

    def delete(ids: list[str]) -> dict[str, list[str]]:
        odd = [i[1:] for i in ids if i.startswith("#")]
        store.delete_ids(None, client, name, [i for i in ids if not i.startswith("#")])
        if odd:
            client.delete(name, points_selector=models.PointIdsList(points=odd), wait=True)
        return {"delete": ids}

    return Target(key, stream=lambda: (pair(r) for r in qd.iter_points(client, name, batch=QDRANT_PAGE)), lookup=lookup,
                  upsert=upsert, delete=delete)


def _embedding_field(ctx: AuditContext, model_id: str) -> Target:
    """``songs.embedding`` must record the pair the vector stores hold (the repair's pointer to the shard)."""
    db = ctx.db
    has = {"embedding": {"$exists": True}}

    def fp(d: dict[str, Any]) -> str:
        emb = d.get("embedding") or {}
        return store.fingerprint(emb.get("lyrics_sha256"), emb.get("model_id"))

    def lookup(ids: list[str]) -> dict[str, str]:
        out = {}
        for part in chunks(ids):
            out.update({d["_id"]: fp(d) for d in db[SONGS].find({"_id": {"$in": part}, **has}, {"embedding": 1})})
        return out

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        return {"flagged_needs_encoding": ids}  # only lyrics_embeddings can produce the vector and its shard

    def delete(ids: list[str]) -> dict[str, list[str]]:
        for part in chunks(ids):
            db[SONGS].update_many({"_id": {"$in": part}, "lyrics.status": {"$ne": "found"}},
                                  {"$unset": {"embedding": ""}})
        return {"unset_embedding": ids}

    return Target("mongo:songs.embedding",
                  stream=lambda: ((d["_id"], fp(d)) for d in db[SONGS].find(has, {"embedding": 1}, batch_size=2000)),
                  lookup=lookup, upsert=upsert, delete=delete)


def _json(ids: list[str]) -> str:
    import json

    return json.dumps(ids)
