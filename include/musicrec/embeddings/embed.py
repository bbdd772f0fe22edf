"""The ``lyrics_embeddings`` steps (issue 5), each idempotent; the DAG runs them as separate tasks:

1. :func:`embed_changed` — songs whose ``lyrics.status`` is ``found`` and whose ``songs.embedding``
   (``model_id``, ``lyrics_sha256``) differs from the current model and lyrics are encoded in
   length-sorted parts; each part is one delta file ``embeddings/<slug>/run=<run_id>/part-NNNNN.parquet``
   (atomic publish + ``lake_partitions``). A retry of the same run skips the songs its parts already
   hold and numbers new parts after them: a killed run resumes without re-encoding or duplicates.
2. the run's parts into every vector store (:func:`upsert_run_primary` for the serving one — Milvus —,
   :func:`upsert_run_mirror` for each mirror — Qdrant —; each store's ``upsert_records``), then the indexes.
3. :func:`activate` — the models document of this model ``active`` (others ``retired``) and the alias
   ``lyrics_embeddings`` → ``lyrics_embeddings_<slug>`` in Milvus and Qdrant.
4. :func:`stamp` — ``songs.embedding = {model_id, lyrics_sha256, shard}``, only where the lyrics are
   still the ones embedded (an edit meanwhile keeps the song selected for the next run).
5. :func:`prune` — ids in the serving collection (Milvus or Qdrant) that are not songs with found
   lyrics stamped with this model are deleted from both; ``embedding`` is unset on songs whose lyrics
   are no longer found. Runs after the stamp, so nothing upserted by this run is taken for stale.

No Airflow imports: callers pass the database, lake root, the vector stores (``musicrec.vectors``; raw
clients are wrapped) and the encoder.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pymongo import UpdateOne
from pymongo.database import Database

from musicrec import registry
from musicrec.embeddings import store
from musicrec.embeddings.encoder import Encoder
from musicrec.lake.reader import local_file
from musicrec.lake.storage import LakePath
from musicrec.vectors import Capability, as_store, as_stores, has
from musicrec.vectors import milvus as mv
from musicrec.vectors.base import DimensionMismatch, VectorStoreError

log = logging.getLogger(__name__)

SONGS = "songs"
INDEX_TAG = re.compile(r"_ix[0-9a-f]{6}$")
IN_CHUNK = 500


# ----------------------------------------------------------------------------- 1. select + encode

def changed_songs(db: Database, model_id: str, *, limit: int | None = None) -> tuple[list[str], int]:
    """Ids of found songs whose embedding is missing, of another model or of other lyrics (popularity
    order, so ``limit`` embeds the most played first), and how many found songs have no lyrics hash."""
    todo: list[str] = []
    no_hash = 0
    cursor = db[SONGS].find({"lyrics.status": "found"}, {"lyrics.sha256": 1, "embedding": 1, "plays_total": 1})
    rows = []
    for d in cursor:
        sha = (d.get("lyrics") or {}).get("sha256")
        if not sha:
            no_hash += 1  # found without plain text (synced-only, empty): nothing to embed
            continue
        emb = d.get("embedding") or {}
        if emb.get("model_id") != model_id or emb.get("lyrics_sha256") != sha:
            rows.append((-(d.get("plays_total") or 0), d["_id"]))
    rows.sort()
    todo = [i for _, i in rows]
    return (todo[:limit] if limit else todo), no_hash


def listed_songs(db: Database, track_ids: Sequence[str]) -> tuple[list[str], int]:
    """The given songs that have found plain lyrics, in the given order, embedded whatever their
    stamp says (an event-driven run: a title or artist edit changes the BM25 text, not the lyrics
    hash). A ``lyrics.plain`` edited in place leaves ``lyrics.sha256`` stale: it is recomputed first,
    so the stamp and the audit see the new text's hash. Returns (ids, found songs without text)."""
    ids = list(dict.fromkeys(i for i in track_ids if isinstance(i, str)))
    docs = _fetch(db, ids)
    now = datetime.now(UTC)
    todo, no_hash, fixes = [], 0, []
    for tid in ids:
        d = docs.get(tid)
        if d is None:
            continue  # gone, or no found lyrics: prune's business
        lyr = d.get("lyrics") or {}
        plain = lyr.get("plain") or ""
        if not plain.strip():
            no_hash += 1
            continue
        sha = hashlib.sha256(plain.encode()).hexdigest()
        if lyr.get("sha256") != sha:
            fixes.append(UpdateOne({"_id": tid, "lyrics.plain": plain},
                                   {"$set": {"lyrics.sha256": sha, "updated_at": now}}))
        todo.append(tid)
    if fixes:
        db[SONGS].bulk_write(fixes, ordered=False)
        log.info("%d edited lyrics got their sha256 recomputed", len(fixes))
    return todo, no_hash


def run_parts(db: Database, model_slug: str, run_id: str) -> list[str]:
    """Lake paths of the delta parts this run wrote so far (from the registry), in part order."""
    prefix = store.run_dir(model_slug, run_id) + "/"
    return sorted(d["_id"] for d in db[registry.COLLECTION].find(
        {"dataset": store.dataset(model_slug), "producer": store.PRODUCER}, {"_id": 1})
        if d["_id"].startswith(prefix))


def _part_ids(root: LakePath, rel: str) -> dict[str, str]:
    t = pq.read_table(local_file(root, rel), columns=["track_id", "lyrics_sha256"])
    return dict(zip(t.column("track_id").to_pylist(), t.column("lyrics_sha256").to_pylist(), strict=True))


def _fetch(db: Database, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        for d in db[SONGS].find({"_id": {"$in": ids[start:start + IN_CHUNK]}, "lyrics.status": "found"},
                                {"title": 1, "artist": 1, "lyrics.plain": 1, "lyrics.sha256": 1}):
            out[d["_id"]] = d
    return out


def embed_changed(db: Database, root: LakePath, encoder: Encoder, run_id: str, *, batch_size: int = 32,
                  part_size: int = 1024, max_songs: int | None = None, progress_s: float = 15.0,
                  track_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Encode the changed songs into this run's delta parts. Returns small metadata (XCom).

    ``track_ids`` (an event-driven run: the songs a change stream reported) embeds exactly those
    (:func:`listed_songs`) instead of scanning for changed fingerprints."""
    started = time.monotonic()
    spec = encoder.spec
    registry.ensure_indexes(db)
    done_parts = run_parts(db, spec.slug, run_id)
    already: dict[str, str] = {}
    for rel in done_parts:  # a retry of this run: keep what its parts hold
        already.update(_part_ids(root, rel))
    if track_ids is not None:
        todo, no_hash = listed_songs(db, track_ids)
        todo = todo[:max_songs] if max_songs else todo
    else:
        todo, no_hash = changed_songs(db, spec.model_id, limit=max_songs)
    todo = [i for i in todo if i not in already]
    counts = {"selected": len(todo) + len(already), "resumed": len(already), "embedded": 0, "skipped_empty": 0,
              "skipped_nan": 0, "no_lyrics_hash": no_hash}
    log.info("%s: %d songs to embed (%d already in %d parts of this run), %d found songs without plain lyrics",
             spec.model_id, len(todo), len(already), len(done_parts), no_hash)
    next_part = len(done_parts)
    parts = list(done_parts)
    encode_s = 0.0
    logged = time.monotonic()
    # windows of several parts: sorted by length inside a window, so parts (and batches) are homogeneous
    window = part_size * 4
    for w_start in range(0, len(todo), window):
        ids = todo[w_start:w_start + window]
        docs = _fetch(db, ids)
        rows = []
        for tid in ids:
            d = docs.get(tid)
            if d is None:  # lyrics changed status since the selection
                continue
            lyr = d.get("lyrics") or {}
            plain = (lyr.get("plain") or "").strip()
            if not plain:
                counts["skipped_empty"] += 1
                continue
            rows.append({"track_id": tid, "title": d.get("title") or "", "artist": d.get("artist") or "",
                         "plain": plain, "lyrics_sha256": lyr["sha256"], "model_id": spec.model_id})
        rows.sort(key=lambda r: -len(r["plain"]))
        for p_start in range(0, len(rows), part_size):
            chunk = rows[p_start:p_start + part_size]
            enc = encoder.encode([r["plain"] for r in chunk], batch_size=batch_size)
            encode_s += enc.seconds
            finite = np.isfinite(enc.dense).all(axis=1)
            if not finite.all():
                bad = [chunk[i]["track_id"] for i in np.flatnonzero(~finite)]
                log.warning("%d songs gave NaN/inf vectors and are skipped: %s", len(bad), bad[:10])
                counts["skipped_nan"] += len(bad)
            keep = np.flatnonzero(finite)
            if not len(keep):
                continue
            kept = [chunk[i] | {"text": store.compose_text(chunk[i]["title"], chunk[i]["artist"], chunk[i]["plain"])}
                    for i in keep]
            sparse = [enc.sparse[i] for i in keep] if enc.sparse is not None else None
            table = store.delta_table(kept, enc.dense[keep], sparse, encoder.dim)
            rel = store.part_path(spec.slug, run_id, next_part)
            store.write_delta(root, db, rel, table, run_id)
            parts.append(rel)
            next_part += 1
            counts["embedded"] += len(kept)
            if time.monotonic() - logged >= progress_s:
                rate = counts["embedded"] / max(1e-9, time.monotonic() - started)
                log.info("embedded %d/%d songs, %.1f texts/s, ETA %.0f s", counts["embedded"], len(todo), rate,
                         (len(todo) - counts["embedded"]) / rate if rate else math.inf)
                logged = time.monotonic()
    seconds = time.monotonic() - started
    out = encoder.info() | counts | {"collection": store.collection_name(spec.slug), "parts": len(parts),
                                     "new_parts": len(parts) - len(done_parts), "seconds": round(seconds, 3),
                                     "encode_seconds": round(encode_s, 3),
                                     "texts_per_s": round(counts["embedded"] / seconds, 2) if seconds else None}
    log.info("embed: %s", out)
    return out


# ----------------------------------------------------------------------------- 2. stores

def iter_run_tables(db: Database, root: LakePath, model_slug: str, run_id: str) -> Iterator[tuple[str, Any]]:
    for rel in run_parts(db, model_slug, run_id):
        yield rel, store.read_delta(root, rel)


def placement(primary, info: dict[str, Any], dense_index: mv.IndexSpec | None = None) -> dict[str, Any]:
    """Where this run's vectors go in the serving store (issue 14): the alias target when it holds this
    model with the requested dense index (upserts into a live collection never release it); a new physical
    collection ``..._ix<tag>`` when the live one has another dense index (built complete, indexed, verified,
    then swapped by :func:`activate`); else the model's plain collection (a model change)."""
    primary = as_store(primary)
    slug = info["model_slug"]
    spec = dense_index or mv.IndexSpec(*store.INDEXES[store.DENSE][:2], dict(store.INDEXES[store.DENSE][2]))
    target = primary.alias_target(store.ALIAS)
    if store.is_collection_of(target, slug):
        current = primary.describe_index(target, store.DENSE) if has(primary, Capability.INDEX) else None
        if current is None or primary.same_index(current, spec):
            return {"collection": target, "side": False}
        from musicrec.als.publish import index_tag

        return {"collection": store.collection_name(slug, index_tag(spec)), "side": True, "replaces": target}
    return {"collection": store.collection_name(slug), "side": False}


def current_tables(db: Database, root: LakePath, model_id: str) -> Iterator[Any]:
    """Every stamped vector of ``model_id``: each song's row of the delta file ``songs.embedding.shard``
    names (what a new physical collection must hold before this run's parts)."""
    shards: dict[str, list[str]] = {}
    for d in db[SONGS].find({"embedding.model_id": model_id, "lyrics.status": "found"}, {"embedding.shard": 1}):
        shards.setdefault(d["embedding"]["shard"], []).append(d["_id"])
    for shard, ids in sorted(shards.items()):
        for start in range(0, len(ids), 5000):
            yield store.read_delta(root, shard, ids[start:start + 5000])


def upsert_run_milvus(primary, db: Database, root: LakePath, info: dict[str, Any], run_id: str, *,
                      dense_index: mv.IndexSpec | None = None) -> dict[str, Any]:
    """The run's parts → the serving store's collection of :func:`placement` (created with the model's
    dim/sparse even when empty); a new physical collection first gets every current vector of the model."""
    primary = as_store(primary)
    where = placement(primary, info, dense_index)
    name = where["collection"]
    primary.ensure_record_collection(name, int(info["dim"]), bool(info["sparse"]))
    rows = parts = backfilled = 0
    if where["side"]:
        for table in current_tables(db, root, info["model_id"]):
            backfilled += primary.upsert_records(name, table)
    for _rel, table in iter_run_tables(db, root, info["model_slug"], run_id):
        rows += primary.upsert_records(name, table)
        parts += 1
    return where | {"rows": rows, "parts": parts, "backfilled": backfilled}


upsert_run_primary = upsert_run_milvus


def upsert_run_mirror(mirror, db: Database, root: LakePath, info: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The run's parts → a mirror store's collection of the same name (``info["collection"]``); a new
    physical collection first gets every current vector of the model."""
    mirror = as_store(mirror)
    name = info["collection"]
    created = mirror.ensure_record_collection(name, int(info["dim"]), bool(info["sparse"]))
    rows = written = 0
    if created and info.get("side"):
        for table in current_tables(db, root, info["model_id"]):
            written += mirror.upsert_records(name, table)
    for _rel, table in iter_run_tables(db, root, info["model_slug"], run_id):
        written += mirror.upsert_records(name, table)
        rows += table.num_rows
    return {"collection": name, "rows": rows, "written": written}


upsert_run_qdrant = upsert_run_mirror


def verify_dense(primary, db: Database, root: LakePath, info: dict[str, Any], run_id: str, *, queries: int = 16,
                 min_recall: float = 0.8) -> float:
    """Recall@k of the dense index of ``info["collection"]`` against exact search over the model's
    current vectors (the same check the ALS publish makes before a swap)."""
    tables = list(current_tables(db, root, info["model_id"])) + [
        t for _rel, t in iter_run_tables(db, root, info["model_slug"], run_id)]
    if not tables:
        return 1.0
    ids: list[str] = []
    mats = []
    for t in tables:
        ids.extend(t.column(store.ID_FIELD).to_pylist())
        mats.append(store.dense_matrix(t))
    uniq = dict(zip(ids, np.vstack(mats), strict=True))
    keys, mat = list(uniq), np.vstack(list(uniq.values()))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(keys), size=min(queries, len(keys)), replace=False)
    k = min(10, len(keys))
    client = as_store(primary).client  # a Milvus search with the index's own params (Capability.INDEX)
    res = client.search(info["collection"], data=mat[picks].tolist(), limit=k, anns_field=store.DENSE,
                        search_params={"metric_type": "IP", "params": {"ef": 64}}, output_fields=[store.ID_FIELD],
                        consistency_level="Strong")
    exact = np.argsort(-(mat[picks] @ mat.T), axis=1, kind="stable")[:, :k]
    hits = sum(len({keys[i] for i in row} & {h.get("id") or h["entity"][store.ID_FIELD] for h in found})
               for row, found in zip(exact, res, strict=True))
    recall = hits / (len(picks) * k)
    if recall < min_recall:
        raise mv.VectorStoreError(f"{info['collection']}: dense recall@{k} {recall:.2f} < {min_recall}")
    return recall


def build_indexes(primary, collection: str, *, dense_index: mv.IndexSpec | None = None,
                  timeout_s: float = 1800.0) -> dict[str, dict[str, Any]]:
    """Every vector field's index (``store.INDEXES``; ``dense_index`` overrides the dense one), each
    checked as really built, then the collection loaded once (a server loads only fully indexed ones).
    Only for a store with ``Capability.INDEX``."""
    primary = as_store(primary)
    client = primary.client
    fields = {f["name"] for f in client.describe_collection(collection)["fields"]}
    out = {}
    for field, (itype, metric, params) in store.INDEXES.items():
        if field not in fields:
            continue
        spec = dense_index if (field == store.DENSE and dense_index) else mv.IndexSpec(itype, metric, dict(params))
        desc = primary.build_index(collection, spec, field=field, timeout_s=timeout_s, load=False)
        out[field] = {k: desc.get(k) for k in ("index_type", "metric_type", "indexed_rows", "total_rows")}
    client.load_collection(collection)
    state = client.get_load_state(collection).get("state")
    if "Loaded" not in str(state):
        raise VectorStoreError(f"{collection}: load state {state} after load_collection")
    return out


# ----------------------------------------------------------------------------- 3. activate

def activate(db: Database, primary, mirrors, info: dict[str, Any], *, root: LakePath | None = None,
             run_id: str = "") -> dict[str, Any]:
    """Record the model and point the alias at its collection in every store (the serving one, then its
    ``mirrors``: a store, a client, None or a sequence of them); the collection it replaced is dropped by
    :func:`drop_replaced` after the stamp, never while it is served."""
    now = datetime.now(UTC)
    stores = as_stores(primary, mirrors)
    slug, name = info["model_slug"], info["collection"]
    have = stores[0].collection_dim(name)
    if have != int(info["dim"]):
        raise DimensionMismatch(f"{name} has dim {have}, the model has {info['dim']}")
    recall = None
    if info.get("side") and root is not None and has(stores[0], Capability.INDEX):
        recall = verify_dense(stores[0], db, root, info, run_id)  # a rebuilt index proves itself before the swap
    doc_id = store.model_doc_id(slug)
    fields = {"kind": store.MODEL_KIND, "model": info["model"], "model_id": info["model_id"], "dim": int(info["dim"]),
              "sparse": bool(info["sparse"]), "collection": name, "alias": store.ALIAS,
              "max_length": info.get("max_length"), "model_slug": slug}
    cur = db["models"].find_one({"_id": doc_id})
    if cur is None or any(cur.get(k) != v for k, v in fields.items()) or cur.get("status") != "active":
        db["models"].update_one({"_id": doc_id}, {"$set": fields | {"status": "active", "activated_at": now},
                                                  "$setOnInsert": {"created_at": now}}, upsert=True)
    retired = db["models"].update_many({"kind": store.MODEL_KIND, "status": "active", "_id": {"$ne": doc_id}},
                                       {"$set": {"status": "retired", "retired_at": now}}).modified_count
    out: dict[str, Any] = {"model": doc_id, "collection": name}
    for n, vs in enumerate(stores):
        out["previous" if n == 0 else f"{vs.kind}_previous"] = vs.swap_alias(store.ALIAS, name)
    if len(stores) < 2:
        out["qdrant_previous"] = None  # the result's shape of the Milvus + Qdrant era
    return out | {"retired": retired, "recall": recall}


# ----------------------------------------------------------------------------- 4. stamp

def stamp(db: Database, root: LakePath, model_slug: str, run_id: str) -> dict[str, int]:
    """``songs.embedding`` of every song in this run's parts (diff writes; lyrics must be unchanged)."""
    now = datetime.now(UTC)
    written = rows = stale = 0
    for rel in run_parts(db, model_slug, run_id):
        t = pq.read_table(local_file(root, rel), columns=["track_id", "lyrics_sha256", "model_id"])
        ids, shas, mids = (t.column(c).to_pylist() for c in ("track_id", "lyrics_sha256", "model_id"))
        for start in range(0, len(ids), IN_CHUNK):
            sl = slice(start, start + IN_CHUNK)
            cur = {d["_id"]: d for d in db[SONGS].find({"_id": {"$in": ids[sl]}}, {"lyrics.sha256": 1,
                                                                                   "lyrics.status": 1,
                                                                                   "embedding": 1})}
            ops = []
            for tid, sha, mid in zip(ids[sl], shas[sl], mids[sl], strict=True):
                want = {"model_id": mid, "lyrics_sha256": sha, "shard": rel}
                d = cur.get(tid) or {}
                lyr = d.get("lyrics") or {}
                if lyr.get("status") != "found" or lyr.get("sha256") != sha:
                    stale += 1  # edited or lost since: the next run handles it
                    continue
                if d.get("embedding") != want:
                    ops.append(UpdateOne({"_id": tid, "lyrics.sha256": sha, "lyrics.status": "found"},
                                         {"$set": {"embedding": want, "updated_at": now}}))
            if ops:
                written += db[SONGS].bulk_write(ops, ordered=False).modified_count
            rows += len(ids[sl])
    log.info("stamp: %d songs in this run's parts, %d written, %d changed meanwhile", rows, written, stale)
    return {"rows": rows, "written": written, "changed_meanwhile": stale}


# ----------------------------------------------------------------------------- 5. prune

def prune(db: Database, primary, mirrors, collection: str, model_id: str) -> dict[str, Any]:
    """Delete vectors of songs without found lyrics stamped with ``model_id`` from every store (the
    serving one and its ``mirrors``); unset ``embedding`` on songs whose lyrics are no longer found."""
    stores = as_stores(primary, mirrors)
    wanted = {d["_id"] for d in db[SONGS].find({"lyrics.status": "found", "embedding.model_id": model_id},
                                                {"_id": 1})}
    held = {vs.kind: (set(store.fingerprints(vs, collection)) if vs.has_collection(collection) else set())
            for vs in stores}
    extra = set().union(*held.values()) - wanted
    deleted = store.delete_ids(stores, collection, extra)
    unset = db[SONGS].update_many({"embedding": {"$exists": True}, "lyrics.status": {"$ne": "found"}},
                                  {"$unset": {"embedding": ""}, "$set": {"updated_at": datetime.now(UTC)}}
                                  ).modified_count
    dropped = drop_replaced(stores, None, collection)
    log.info("prune %s: %d stale ids deleted (%s), embedding unset on %d songs", collection, len(extra),
             {k: len(v) for k, v in held.items()}, unset)
    out: dict[str, Any] = {"deleted": len(extra), "unset": unset, "dropped": dropped}
    for vs in stores:
        out[f"{vs.kind}_deleted"] = deleted.get(vs.kind, 0)
        # rows left: Milvus "rows", the payload stores "points" (the result's names of the two-store era)
        out[f"{vs.kind}_{'points' if has(vs, Capability.PAYLOAD) else 'rows'}"] = len(held[vs.kind] - extra)
    return out


def drop_replaced(primary, mirrors, serving: str) -> list[str]:
    """Drop the older physical collections of the serving model in every store (an index change's
    predecessors): never the alias target, never another model's collection (a model switch keeps the old
    one for roll-back). Mirrors' drops are listed as ``<kind>:<name>``."""
    base = INDEX_TAG.sub("", serving)
    dropped = []
    for n, vs in enumerate(as_stores(primary, mirrors)):
        target = vs.alias_target(store.ALIAS)
        for name in vs.list_collections():
            if name != serving and name != target and (name == base or name.startswith(base + "_ix")):
                vs.drop_collection(name)
                dropped.append(name if n == 0 else f"{vs.kind}:{name}")
    return dropped
