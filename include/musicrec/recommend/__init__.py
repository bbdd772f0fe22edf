"""Recommendations from the ALS vectors (issue 3): ``home`` and ``next_song``. No Airflow imports.

* ``home(user_id, k)``: the user's vector of the serving version → top-k tracks by inner product in
  ``music_collection``, excluding tracks the user played in the model's window (computed once per
  version by the publish: ``users.played_tracks.<version>``, read with the vector, no lake scan).
* ``next_song(user_id, current_track_id, k)``: the same search with the session vector
  0.7·user + 0.3·(the current track's vector), also excluding the current track; with lyrics
  embeddings (issue 5) blended with lyrics similarity: 0.6·minmax(ALS) + 0.4·minmax(lyrics).
* ``hybrid.search(text, k)``: dense + sparse + BM25 lyrics search fused by reciprocal rank.

The serving model is the one the ``music_collection`` alias points at, read once per request: its
version comes from the target's name, the user's vector and played tracks from
``users.latent_vectors.<that version>`` / ``users.played_tracks.<that version>``, and the search runs on that physical collection (not the alias, which may be swapped meanwhile). So a
request sees the old model or the new one, never a mix, at every moment of a publish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymongo.database import Database

from musicrec.als.params import (
    ALIAS,
    PLAYED,
    REFRESHED,
    USER_VECTORS,
    played_field,
    refreshed_field,
    user_vector_field,
    version_of,
)
from musicrec.recommend import hybrid
from musicrec.vectors import Capability, VectorStore, as_stores, has

USER_WEIGHT, TRACK_WEIGHT = 0.7, 0.3
MAX_LIMIT = 16384  # Milvus' topk limit


class NoRecommendations(LookupError):
    """The user has no vector in the serving model (unknown, cold, or not in the active model)."""


@dataclass(frozen=True)
class Recommendation:
    track_id: str
    score: float
    title: str | None = None
    artist: str | None = None


def serving_store(stores: Any) -> VectorStore:
    """The store that serves: the first of ``stores`` (a store, a client, or a sequence of them)."""
    found = as_stores(stores)
    if not found:
        raise ValueError("no vector store given")
    return found[0]


def serving_model(stores: Any, alias: str = ALIAS) -> tuple[str, str]:
    """(version, physical collection) the alias points at now (loaded) in the serving store."""
    store = serving_store(stores)
    target = store.alias_target(alias)
    version = version_of(target, alias) if target else None
    if target is None or version is None:
        raise NoRecommendations(f"no model is served (alias {alias} -> {target})")
    store.ready(target)
    return version, target


def user_vector(db: Database, user_id: str, version: str) -> np.ndarray:
    """The user's vector in model ``version``: its fold-in (``users.refreshed_vectors.<version>``) when
    there is one, else the published ``users.latent_vectors.<version>``."""
    return user_state(db, user_id, version)[0]


def user_state(db: Database, user_id: str, version: str) -> tuple[np.ndarray, frozenset[str] | None]:
    """The user's vector in model ``version`` and the tracks they played in its window, in one read
    (``refreshed_vectors.<version>`` from a fold-in, else ``latent_vectors.<version>``;
    ``played_tracks.<version>``: written by the publish). The
    played set is None for a version published before played tracks were stored (nothing excluded
    until the ``users`` publish step is re-run for it)."""
    doc = db["users"].find_one({"_id": user_id}, {user_vector_field(version): 1, refreshed_field(version): 1,
                                                  played_field(version): 1})
    if doc is None:
        raise NoRecommendations(f"unknown user {user_id!r}")
    vec = (doc.get(REFRESHED) or {}).get(version) or (doc.get(USER_VECTORS) or {}).get(version)
    if not vec:
        raise NoRecommendations(f"user {user_id!r} has no vector in the served model {version}")
    played = (doc.get(PLAYED) or {}).get(version)
    return np.asarray(vec, dtype=np.float32), (frozenset(played) if played is not None else None)


def played_tracks(db: Database, user_id: str, version: str) -> frozenset[str] | None:
    """Tracks ``user_id`` played in model ``version``'s window, as the publish stored them (None: not
    stored for that user and version)."""
    doc = db["users"].find_one({"_id": user_id}, {played_field(version): 1})
    played = ((doc or {}).get(PLAYED) or {}).get(version)
    return frozenset(played) if played is not None else None


def _search(store: VectorStore, collection: str, vector: np.ndarray, k: int, exclude: set[str]
            ) -> list[tuple[str, float]]:
    dim = store.collection_dim(collection)
    if dim != len(vector):
        raise NoRecommendations(f"vector dim {len(vector)} does not match {collection}'s {dim}")
    limit = min(MAX_LIMIT, k + len(exclude))
    out = []
    for tid, score in store.search(collection, vector.tolist(), limit):
        if tid not in exclude:
            out.append((tid, score))
        if len(out) == k:
            break
    return out


def _with_titles(db: Database, hits: list[tuple[str, float]]) -> list[Recommendation]:
    ids = [t for t, _ in hits]
    songs: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        for d in db["songs"].find({"_id": {"$in": ids[start:start + 500]}}, {"title": 1, "artist": 1}):
            songs[d["_id"]] = d
    return [Recommendation(t, s, songs.get(t, {}).get("title"), songs.get(t, {}).get("artist")) for t, s in hits]


def home(user_id: str, k: int = 10, *, db: Database, milvus: Any = None, stores: Any = None,
         exclude: Iterable[str] | None = None) -> list[Recommendation]:
    """Top-k tracks for the user's home screen, from the serving store (the first of ``stores``;
    ``milvus`` is its name of the two-store era), without the tracks the user played in the model's
    window (stored by the publish). ``exclude`` replaces that set (``[]``: exclude nothing)."""
    store = serving_store(stores if stores is not None else milvus)
    version, collection = serving_model(store)
    vector, played = user_state(db, user_id, version)
    skip = set(exclude if exclude is not None else played or ())
    return _with_titles(db, _search(store, collection, vector, k, skip))


def _vectors(store: VectorStore, collection: str, ids: list[str]) -> dict[str, np.ndarray]:
    return {r.key: np.asarray(r.vector, dtype=np.float32) for r in store.fetch(collection, ids, vectors=True)}


def next_song(user_id: str, current_track_id: str, k: int = 10, *, db: Database, milvus: Any = None,
              stores: Any = None, exclude: Iterable[str] | None = None,
              content: bool = True, candidates: int | None = None) -> list[Recommendation]:
    """Next songs after ``current_track_id``: ALS with the session vector, plus (``content``, when the
    serving store has the lyrics collection (BM25 capability) and it holds the current track) the
    lyrics-similarity term — score = 0.6·minmax(ALS) + 0.4·minmax(lyrics similarity) over the union of
    both candidate sets (``candidates`` each, default max(50, 5k)); a candidate missing from one side gets
    that side's minimum. Played tracks (and the current one) are excluded as in :func:`home`."""
    store = serving_store(stores if stores is not None else milvus)
    version, collection = serving_model(store)
    vector, played = user_state(db, user_id, version)
    track = _vectors(store, collection, [current_track_id]).get(current_track_id)
    if track is None:
        raise NoRecommendations(f"track {current_track_id!r} is not in model {version}")
    session = USER_WEIGHT * vector + TRACK_WEIGHT * track
    skip = set(exclude if exclude is not None else played or ())
    skip.add(current_track_id)
    # the lyrics term needs the hybrid collection: a store with BM25 (Milvus) holds it
    lyrics_client = store.client if content and has(store, Capability.BM25) else None
    lyrics_collection = hybrid.serving(lyrics_client) if lyrics_client is not None else None
    if lyrics_collection is None:
        return _with_titles(db, _search(store, collection, session, k, skip))
    n = candidates or max(50, 5 * k)
    als = dict(_search(store, collection, session, n, skip))
    current, similar = hybrid.similar(lyrics_client, lyrics_collection, current_track_id, n, skip)
    if current is None:  # no lyrics vector for the current track: the ALS order
        return _with_titles(db, sorted(als.items(), key=lambda kv: -kv[1])[:k])
    lyrics = dict(similar)
    # fill each side's scores for the other side's candidates, so the blend compares like with like
    only_lyrics = [t for t in lyrics if t not in als]
    for tid, vec in _vectors(store, collection, only_lyrics).items():
        als[tid] = float(session @ vec)
    only_als = [t for t in als if t not in lyrics]
    for tid, vec in hybrid.dense_vectors(lyrics_client, lyrics_collection, only_als).items():
        lyrics[tid] = float(current @ vec)
    return _with_titles(db, hybrid.blend(als, lyrics)[:k])
