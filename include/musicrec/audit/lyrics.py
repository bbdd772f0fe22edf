"""Lyrics scope (design §4): ``songs.lyrics`` + the active embedding model are the truth.

Every song with ``lyrics.status == found`` (and plain lyrics, i.e. a ``lyrics.sha256``: a found song
with synced-only or empty lyrics has nothing to embed) must be in the collection the ``lyrics_embeddings`` alias
serves (in every vector store of ``AuditContext.vector_stores()``: Milvus and the Qdrant mirror) with fingerprint ``embeddings.store.fingerprint(lyrics.sha256,
model_id)``, and ``songs.embedding`` must record that same pair; songs without found lyrics must be
absent from all three. Structural checks: the collection exists with the model's dimension and the
alias points at it.

Repair re-upserts a missing or stale vector from the delta file ``songs.embedding.shard`` names
(``embeddings.store.read_delta`` → each store's ``upsert_records``: the stores' own writers, no copy
here) when that row holds the song's *current* lyrics and model; otherwise the song
needs encoding and is flagged for ``lyrics_embeddings`` (which embeds changed lyrics). Orphans older
than the grace period whose song still has no found lyrics are deleted (each store's ``delete``);
an orphan ``songs.embedding`` is ``$unset`` (the contract's "vectors removed" state).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from musicrec.audit.core import (
    AuditContext,
    ScopePlan,
    Target,
    check_alias,
    check_collection,
    chunks,
    page_size,
)
from musicrec.embeddings import store
from musicrec.vectors import Record, VectorStore
from musicrec.vectors.records import PAYLOAD

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
    for vector_store in ctx.vector_stores():
        plan.targets.append(_store_target(ctx, plan, vector_store, name, dim, from_shards))
    plan.targets.append(_embedding_field(ctx, model_id))
    return [plan]


def _store_target(ctx: AuditContext, plan: ScopePlan, vs: VectorStore, name: str, dim: int, from_shards) -> Target:
    """One vector store's target: structural checks (collection, dimension, alias), then its rows'
    fingerprints (``lyrics_sha256`` and ``model_id``: scalar fields in Milvus, payload in Qdrant)."""
    key = f"{vs.kind}:{name}"
    exists = vs.has_collection(name)
    if check_collection(plan, key, name, exists=exists, dim=dim, have_dim=lambda: vs.collection_dim(name),
                        rebuild=None, hint="re-run lyrics_embeddings (it rebuilds the collection from the deltas)"):
        vs.ready(name)
    if exists:
        check_alias(plan, f"{vs.kind}:alias {store.ALIAS}", store.ALIAS, name, vs.alias_target(store.ALIAS),
                    lambda: vs.swap_alias(store.ALIAS, name))

    def fp(r: Record) -> str:
        return store.fingerprint(r.payload.get("lyrics_sha256"), r.payload.get("model_id"))

    def lookup(ids: list[str]) -> dict[str, str]:
        return {r.key: fp(r) for r in vs.fetch(name, ids, fields=PAYLOAD)}

    upsert = _upsert_from_shards(from_shards, lambda table: vs.upsert_records(name, table))

    def delete(ids: list[str]) -> dict[str, list[str]]:
        vs.delete(name, ids)
        return {"delete": ids}

    return Target(key, stream=lambda: ((r.key, fp(r)) for r in vs.scan(name, fields=PAYLOAD, batch=page_size(vs))),
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
