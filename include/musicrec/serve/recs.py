"""What the read routes answer, on top of the recommendation library. No Airflow imports.

* One model per answer: the served ALS version is read from the ``music_collection`` alias before
  and after the library call; if a publish swapped the alias in between, the call is repeated
  (at most 3 times), so ``model_version`` always names the model that produced the items.
* Cold users (in ``users`` but without a vector in the served model) and tracks the served model
  does not hold get the popularity list (``plays_total``), marked ``"fallback": "popularity"``.
* Played tracks are excluded by the library with the sets the publish stored per version
  (``users.played_tracks.<version>``, read together with the user's vector): the API never reads the
  lake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from musicrec import recommend
from musicrec.als.params import ALIAS, REFRESHED, USER_VECTORS, version_of
from musicrec.embeddings import store
from musicrec.recommend import hybrid
from musicrec.serve.deps import Services
from musicrec.vectors import milvus as mv

log = logging.getLogger(__name__)
T = TypeVar("T")
POPULAR_POOL = 500  # how many of the most played songs the popularity list keeps in memory
SEARCH_MODES = ("hybrid", "dense", "sparse", "bm25")


class ApiError(Exception):
    """An error answer: ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Answer:
    model_version: str | None
    items: list[dict[str, Any]]
    fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "items": self.items, "fallback": self.fallback}


def _item(track_id: str, title: str | None, artist: str | None, score: float) -> dict[str, Any]:
    return {"track_id": track_id, "title": title, "artist": artist, "score": round(float(score), 6)}


def _hit_id(hit: dict[str, Any], id_field: str) -> str:
    return hit.get(id_field) or hit.get("id") or hit["entity"][id_field]


class Recommender:
    def __init__(self, services: Services) -> None:
        self.services = services
        # None: the library excludes the played tracks the publish stored; []: nothing excluded
        self._exclude: list[str] | None = None if services.settings.exclude_played else []
        self._popular: tuple[float, list[dict[str, Any]]] | None = None

    # ------------------------------------------------------------------ helpers

    @property
    def db(self):
        return self.services.db

    @property
    def milvus(self):
        return self.services.milvus

    def served(self) -> tuple[str, str] | None:
        """(version, physical collection) behind the ALS alias now, or None when nothing is served."""
        target = mv.alias_target(self.milvus, ALIAS)
        version = version_of(target, ALIAS) if target else None
        return (version, target) if version else None

    def _consistent(self, call: Callable[[str | None, str | None], T]) -> tuple[str | None, T]:
        """``call(version, collection)`` with the alias unchanged around it (retried on a swap)."""
        for _ in range(3):
            before = self.served()
            out = call(*(before or (None, None)))
            if self.served() == before:
                break
        return (before[0] if before else None), out

    def user_exists(self, user_id: str) -> None:
        if self.db["users"].find_one({"_id": user_id}, {"_id": 1}) is None:
            raise ApiError(404, "user_not_found", f"unknown user {user_id!r}")

    def song(self, track_id: str) -> dict[str, Any]:
        doc = self.db["songs"].find_one({"_id": track_id}, {"title": 1, "artist": 1, "plays_total": 1,
                                                             "lyrics.status": 1})
        if doc is None:
            raise ApiError(404, "track_not_found", f"unknown track {track_id!r}")
        return doc

    def popular(self, k: int, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The most played songs (``plays_total``), cached for ``popularity_cache_s``."""
        now = time.monotonic()
        cached = self._popular
        if cached is None or now - cached[0] > self.services.settings.popularity_cache_s:
            docs = self.db["songs"].find({}, {"title": 1, "artist": 1, "plays_total": 1}).sort(
                [("plays_total", -1), ("_id", 1)]).limit(POPULAR_POOL)
            cached = (now, [_item(d["_id"], d.get("title"), d.get("artist"), d.get("plays_total") or 0)
                            for d in docs])
            self._popular = cached
        skip = set(exclude)
        return [i for i in cached[1] if i["track_id"] not in skip][:k]

    @staticmethod
    def _items(recs: list[recommend.Recommendation]) -> list[dict[str, Any]]:
        return [_item(r.track_id, r.title, r.artist, r.score) for r in recs]

    # ------------------------------------------------------------------ routes

    def home(self, user_id: str, k: int) -> Answer:
        def call(version: str | None, _collection: str | None) -> list[dict[str, Any]] | None:
            if version is None:
                return None
            try:
                return self._items(recommend.home(user_id, k, db=self.db, milvus=self.milvus,
                                                  exclude=self._exclude))
            except recommend.NoRecommendations:
                return None

        # the library's read of the user's vector answers for the user too: the 404 check costs a
        # round trip only when there is no recommendation
        version, items = self._consistent(call)
        if items is None:
            self.user_exists(user_id)
            return Answer(version, self.popular(k), "popularity")
        return Answer(version, items)

    def next(self, user_id: str, track_id: str, k: int) -> Answer:
        def call(version: str | None, _collection: str | None) -> list[dict[str, Any]] | None:
            if version is None:
                return None
            try:
                return self._items(recommend.next_song(user_id, track_id, k, db=self.db, milvus=self.milvus,
                                                       exclude=self._exclude))
            except recommend.NoRecommendations:  # a cold user, or a track the model does not hold
                return None

        version, items = self._consistent(call)
        if items is None:
            self.user_exists(user_id)
            self.song(track_id)
            return Answer(version, self.popular(k, exclude=[track_id]), "popularity")
        return Answer(version, items)

    def similar(self, track_id: str, k: int) -> Answer:
        self.song(track_id)

        def call(_version: str | None, collection: str | None) -> list[dict[str, Any]] | None:
            if collection is None:
                return None
            mv.ensure_loaded(self.milvus, collection)
            rows = self.milvus.query(collection, ids=[track_id], output_fields=[mv.VECTOR_FIELD])
            if not rows:
                return None
            res = self.milvus.search(collection, data=[list(rows[0][mv.VECTOR_FIELD])], limit=k + 1,
                                     anns_field=mv.VECTOR_FIELD, output_fields=[mv.ID_FIELD],
                                     search_params={"metric_type": "IP", "params": {"ef": max(64, k + 1)}})
            hits = [(_hit_id(h, mv.ID_FIELD), float(h["distance"])) for h in res[0]]
            hits = [(t, s) for t, s in hits if t != track_id][:k]
            titles = self._titles([t for t, _ in hits])
            return [_item(t, *titles.get(t, (None, None)), s) for t, s in hits]

        version, items = self._consistent(call)
        if items is None:
            return Answer(version, self.popular(k, exclude=[track_id]), "popularity")
        return Answer(version, items)

    def _titles(self, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        for start in range(0, len(ids), 500):
            for d in self.db["songs"].find({"_id": {"$in": ids[start:start + 500]}}, {"title": 1, "artist": 1}):
                out[d["_id"]] = (d.get("title"), d.get("artist"))
        return out

    def track(self, track_id: str) -> dict[str, Any]:
        doc = self.song(track_id)
        return {"track_id": doc["_id"], "title": doc.get("title"), "artist": doc.get("artist"),
                "lyrics_status": (doc.get("lyrics") or {}).get("status"), "plays": int(doc.get("plays_total") or 0)}

    def users(self, limit: int) -> dict[str, Any]:
        """Some user ids for the page's picker, with whether the served model knows them."""
        served = self.served()
        fields = [f"{kind}.{served[0]}" for kind in (USER_VECTORS, REFRESHED)] if served else []
        proj = {"_id": 1, **dict.fromkeys(fields, 1)}
        items = []
        for d in self.db["users"].find({}, proj).sort("_id", 1).limit(limit):
            vec = served and any((d.get(kind) or {}).get(served[0]) for kind in (USER_VECTORS, REFRESHED))
            items.append({"user_id": d["_id"], "in_model": bool(vec)})
        return {"model_version": served[0] if served else None, "items": items}

    # ------------------------------------------------------------------ lyrics search

    def search(self, text: str, k: int, mode: str) -> Answer:
        if not text.strip():
            raise ApiError(422, "invalid_request", "q must not be blank")
        collection = hybrid.serving(self.milvus)
        if collection is None:
            return Answer(None, [])
        doc = store.active_model(self.db)
        version = doc["_id"] if doc else collection
        if mode == "bm25":
            # BM25 scores are >= 0 and higher is better; Milvus Lite reports them negated (its ranking is
            # right), so the magnitude is the score on both
            items = self._leg(collection, store.BM25_FIELD, text, {"metric_type": "BM25"}, k)
            return Answer(version, [i | {"score": abs(i["score"])} for i in items])
        encoder = self.services.encoder(doc.get("model_id") if doc else None)
        if mode == "hybrid":
            res = hybrid.search(text, k, milvus=self.milvus, encoder=encoder)
            return Answer(version, [_item(h.track_id, h.title, h.artist, h.score) for h in res.hits])
        if encoder is None:
            raise ApiError(503, "mode_unavailable", f"the query encoder of the lyrics model is not available here: "
                                                    f"mode {mode} cannot answer (bm25 and hybrid can)")
        enc = encoder.encode([text], batch_size=1)
        if mode == "dense":
            return Answer(version, self._leg(collection, store.DENSE, enc.dense[0].tolist(),
                                             {"metric_type": "IP", "params": {"ef": max(64, k)}}, k))
        fields = {f["name"] for f in self.milvus.describe_collection(collection)["fields"]}
        if enc.sparse is None or store.SPARSE not in fields:
            raise ApiError(503, "mode_unavailable", "the served lyrics model has no sparse weights: mode sparse "
                                                    "cannot answer")
        if not enc.sparse[0]:
            return Answer(version, [])
        return Answer(version, self._leg(collection, store.SPARSE, enc.sparse[0], {"metric_type": "IP"}, k))

    def _leg(self, collection: str, field: str, data: Any, params: dict[str, Any], k: int) -> list[dict[str, Any]]:
        res = self.milvus.search(collection, data=[data], anns_field=field, search_params=params, limit=k,
                                 output_fields=hybrid.OUTPUT)
        return [_item(_hit_id(h, store.ID_FIELD), h["entity"].get("title"), h["entity"].get("artist"),
                      h["distance"]) for h in res[0]]
