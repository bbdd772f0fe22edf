"""Hybrid lyrics search and the lyrics-similarity term of ``next_song`` (issue 5). No Airflow imports.

``search(text, k)``: dense (the active embedding model's query vector), sparse (its lexical weights,
when the model has them) and BM25 over ``text`` (title + artist + lyrics), fused by reciprocal rank
(RRF, k=60) — Milvus ``hybrid_search`` when the server has it, the same fusion client-side otherwise.
When the query encoder cannot be loaded here (e.g. BGE-M3 weights only on the GPU worker) the search
is BM25 only, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.database import Database

from musicrec.embeddings import store
from musicrec.vectors import Capability, VectorStore, has
from musicrec.vectors import milvus as mv

log = logging.getLogger(__name__)

RRF_K = 60
OUTPUT = [store.ID_FIELD, "title", "artist"]


@dataclass(frozen=True)
class SearchHit:
    track_id: str
    score: float
    title: str | None = None
    artist: str | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    legs: list[str] = field(default_factory=list)  # which searches were fused
    fused_by: str = "milvus"  # "milvus" (hybrid_search) | "client" (fallback RRF)


def _client(milvus):
    """The Milvus client: the search needs BM25 and sparse fields (a store with ``Capability.BM25``);
    a ``VectorStore`` is unwrapped, a client is taken as it is."""
    if isinstance(milvus, VectorStore):
        if not has(milvus, Capability.BM25):
            raise ValueError(f"{milvus.kind} has no BM25/sparse fields: lyrics search needs the serving store")
        return milvus.client
    return milvus


def serving(milvus, alias: str = store.ALIAS) -> str | None:
    """The lyrics collection behind ``alias`` (loaded), or None when there is none yet."""
    milvus = _client(milvus)
    target = mv.alias_target(milvus, alias)
    if target is None:
        return None
    mv.ensure_loaded(milvus, target)
    return target


def query_encoder(db: Database):
    """The active embedding model's encoder, or None when it cannot be loaded in this process."""
    doc = store.active_model(db)
    if doc is None:
        return None
    try:
        from musicrec.embeddings.encoder import DEFAULT_MODEL, load_encoder

        enc = load_encoder(doc.get("model") or DEFAULT_MODEL, "auto", doc.get("max_length"))
    except Exception as exc:  # a missing model must not break search: BM25 still answers
        log.warning("query encoder %s unavailable (%s): BM25 only", doc.get("model"), exc)
        return None
    if enc.spec.model_id != doc["model_id"]:
        log.warning("encoder %s != the active model %s: BM25 only", enc.spec.model_id, doc["model_id"])
        return None
    return enc


def _requests(text: str, encoder, fields: set[str], limit: int) -> list[tuple[str, Any, dict[str, Any]]]:
    reqs: list[tuple[str, Any, dict[str, Any]]] = []
    if encoder is not None:
        enc = encoder.encode([text], batch_size=1)
        if np.isfinite(enc.dense).all():
            reqs.append((store.DENSE, enc.dense[0].tolist(), {"metric_type": "IP", "params": {"ef": max(64, limit)}}))
        if enc.sparse is not None and store.SPARSE in fields and enc.sparse[0]:
            reqs.append((store.SPARSE, enc.sparse[0], {"metric_type": "IP"}))
    reqs.append((store.BM25_FIELD, text, {"metric_type": "BM25"}))
    return reqs


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal-rank fusion: sum over rankings of 1 / (k + rank), rank from 1."""
    out: dict[str, float] = {}
    for ranking in rankings:
        for rank, tid in enumerate(ranking, 1):
            out[tid] = out.get(tid, 0.0) + 1.0 / (k + rank)
    return out


def search(text: str, k: int = 10, *, milvus, db: Database | None = None, encoder=None,
           alias: str = store.ALIAS, candidates: int | None = None) -> SearchResult:
    """Top-k songs for a lyric phrase (dense + sparse + BM25, RRF). ``encoder`` defaults to the active
    model's (from ``db``)."""
    if not (text or "").strip():
        raise ValueError("empty search text")
    milvus = _client(milvus)
    collection = serving(milvus, alias)
    if collection is None:
        return SearchResult([], [], "none")
    if encoder is None and db is not None:
        encoder = query_encoder(db)
    fields = {f["name"] for f in milvus.describe_collection(collection)["fields"]}
    limit = max(k, candidates or 4 * k)
    reqs = _requests(text, encoder, fields, limit)
    legs = [r[0] for r in reqs]
    try:
        from pymilvus import AnnSearchRequest, RRFRanker

        res = milvus.hybrid_search(collection, [AnnSearchRequest(data=[d], anns_field=f, param=p, limit=limit)
                                                for f, d, p in reqs],
                                   RRFRanker(RRF_K), limit=k, output_fields=OUTPUT)
        hits = [SearchHit(h[store.ID_FIELD] if store.ID_FIELD in h else h["id"], float(h["distance"]),
                          h["entity"].get("title"), h["entity"].get("artist")) for h in res[0]]
        return SearchResult(hits, legs, "milvus")
    except Exception as exc:  # an older server without hybrid_search: fuse here
        log.info("hybrid_search unavailable (%s): fusing %d searches client-side", exc, len(reqs))
    rankings, meta = [], {}
    for f, d, p in reqs:
        res = milvus.search(collection, data=[d], anns_field=f, search_params=p, limit=limit, output_fields=OUTPUT)
        ranking = []
        for h in res[0]:
            tid = h.get(store.ID_FIELD) or h["entity"][store.ID_FIELD]
            ranking.append(tid)
            meta[tid] = h["entity"]
        rankings.append(ranking)
    fused = sorted(rrf(rankings).items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return SearchResult([SearchHit(t, s, meta[t].get("title"), meta[t].get("artist")) for t, s in fused], legs,
                        "client")


# ----------------------------------------------------------------------------- next_song's content term

def dense_vectors(milvus, collection: str, ids: Iterable[str], field: str = store.DENSE) -> dict[str, np.ndarray]:
    """track_id -> the stored vector in ``field`` (ids without a row are absent)."""
    ids = list(dict.fromkeys(ids))
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), 500):
        for r in milvus.query(collection, ids=ids[start:start + 500], output_fields=[store.ID_FIELD, field]):
            out[r[store.ID_FIELD]] = np.asarray(r[field], dtype=np.float32)
    return out


def similar(milvus, collection: str, track_id: str, limit: int, exclude: set[str]
            ) -> tuple[np.ndarray | None, list[tuple[str, float]]]:
    """The track's lyrics vector (None when it has none) and its nearest songs by lyrics (IP)."""
    vec = dense_vectors(milvus, collection, [track_id]).get(track_id)
    if vec is None:
        return None, []
    res = milvus.search(collection, data=[vec.tolist()], anns_field=store.DENSE, limit=min(16384, limit + len(exclude)),
                        search_params={"metric_type": "IP", "params": {"ef": max(64, limit)}},
                        output_fields=[store.ID_FIELD])
    out = []
    for h in res[0]:
        tid = h.get(store.ID_FIELD) or h["entity"][store.ID_FIELD]
        if tid not in exclude:
            out.append((tid, float(h["distance"])))
        if len(out) == limit:
            break
    return vec, out


def minmax(values: dict[str, float], keys: Iterable[str]) -> dict[str, float]:
    """Min-max scaled to [0, 1] over ``keys``; a key without a value counts as the minimum."""
    keys = list(keys)
    present = [values[k] for k in keys if k in values]
    if not present:
        return dict.fromkeys(keys, 0.0)
    lo, hi = min(present), max(present)
    span = hi - lo
    return {k: ((values[k] - lo) / span if span > 0 else 1.0) if k in values else 0.0 for k in keys}


def blend(als: dict[str, float], lyrics: dict[str, float], als_weight: float = 0.6,
          lyrics_weight: float = 0.4) -> list[tuple[str, float]]:
    """score = 0.6·minmax(ALS) + 0.4·minmax(lyrics similarity) over the union of both candidate sets."""
    union = list(dict.fromkeys([*als, *lyrics]))
    a, b = minmax(als, union), minmax(lyrics, union)
    return sorted(((t, als_weight * a[t] + lyrics_weight * b[t]) for t in union), key=lambda kv: (-kv[1], kv[0]))
