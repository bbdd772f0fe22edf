"""Settings of the serving API and the one place its store clients are made. No Airflow imports.

The API reads the same connection settings as the Airflow workers, without importing Airflow: the
``AIRFLOW_CONN_MONGO_DEFAULT`` / ``AIRFLOW_CONN_MILVUS_DEFAULT`` environment variables (URI or JSON
form); ``MUSICREC_SERVE_*`` variables override each one. The API never reads the lake: played tracks
come precomputed with the user's vector (``users.played_tracks.<version>``, written by the publish). So
``make serve`` (which sources ``data/musicrec.env``) and a production replica (which gets the
workers' environment) need no extra configuration.

Clients are made lazily (the first request that needs one), so ``/healthz`` answers while a store is
down and ``/readyz`` can say which one is. Clients and connection values come from the store factory (``musicrec.stores``), as for the Airflow hooks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from musicrec import stores

log = logging.getLogger(__name__)

DEFAULT_DB = stores.DEFAULT_DB


@dataclass(frozen=True)
class Settings:
    """Plain settings: store locations and the API's own knobs."""

    mongo_uri: str = "mongodb://127.0.0.1:27117/"
    mongo_db: str = DEFAULT_DB
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_token: str = ""
    cors_origins: tuple[str, ...] = ()  # closed by default
    key_cache_s: float = 10.0  # how long a key lookup is trusted (a revoke takes effect within it)
    popularity_cache_s: float = 60.0
    exclude_played: bool = True
    max_events: int = 1000  # per POST /v1/events
    store_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        mongo_uri, mongo_db = stores.mongo_from_conn(env.get("AIRFLOW_CONN_MONGO_DEFAULT"))
        milvus = stores.milvus_from_conn(env.get("AIRFLOW_CONN_MILVUS_DEFAULT"))
        milvus_uri, milvus_token = (milvus.uri, milvus.token) if milvus else (None, None)
        origins = env.get("MUSICREC_SERVE_CORS_ORIGINS", "")
        return cls(
            mongo_uri=env.get("MUSICREC_SERVE_MONGO_URI") or mongo_uri or cls.mongo_uri,
            mongo_db=env.get("MUSICREC_SERVE_MONGO_DB") or mongo_db or DEFAULT_DB,
            milvus_uri=env.get("MUSICREC_SERVE_MILVUS_URI") or milvus_uri or cls.milvus_uri,
            milvus_token=env.get("MUSICREC_SERVE_MILVUS_TOKEN") or milvus_token or "",
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            key_cache_s=float(env.get("MUSICREC_SERVE_KEY_CACHE_S", cls.key_cache_s)),
            exclude_played=env.get("MUSICREC_SERVE_EXCLUDE_PLAYED", "1").lower() not in ("0", "false", "no"),
            max_events=int(env.get("MUSICREC_SERVE_MAX_EVENTS", cls.max_events)),
        )


# ----------------------------------------------------------------------------- clients

@dataclass
class _Timed:
    value: Any
    at: float


@dataclass
class Services:
    """The API's store clients, made lazily and shared by all requests of a process (both pymongo's
    and pymilvus' clients are thread-safe; sync routes run on the thread pool)."""

    settings: Settings
    encoder_factory: Callable[[Any], Any] | None = None  # db -> query encoder | None (tests inject one)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _mongo: Any = None
    _milvus: Any = None
    _encoders: dict[str, _Timed] = field(default_factory=dict, repr=False)

    @property
    def mongo(self):
        if self._mongo is None:
            with self._lock:
                if self._mongo is None:
                    ms = int(self.settings.store_timeout_s * 1000)
                    self._mongo = stores.mongo_client(self.settings.mongo_uri, serverSelectionTimeoutMS=ms,
                                                      connectTimeoutMS=ms)
        return self._mongo

    @property
    def db(self):
        return stores.mongo_database(self.mongo, self.settings.mongo_db)

    @property
    def milvus(self):
        if self._milvus is None:
            with self._lock:
                if self._milvus is None:
                    self._milvus = stores.vector_store(stores.VectorStoreSettings(
                        "milvus", uri=self.settings.milvus_uri, token=self.settings.milvus_token or None,
                        options={"timeout": self.settings.store_timeout_s})).client
        return self._milvus

    def encoder(self, model_id: str | None):
        """The query encoder of the active lyrics model, or None (search is then BM25 only). A failed
        load is remembered for a minute, so a missing model does not cost every request a retry."""
        key = model_id or ""
        hit = self._encoders.get(key)
        if hit is not None and (hit.value is not None or time.monotonic() - hit.at < 60):
            return hit.value
        if self.encoder_factory is not None:
            enc = self.encoder_factory(self.db)
        else:
            from musicrec.recommend import hybrid

            enc = hybrid.query_encoder(self.db)
        self._encoders[key] = _Timed(enc, time.monotonic())
        return enc

    def close(self) -> None:
        if self._mongo is not None:
            self._mongo.close()
        if self._milvus is not None:
            try:
                self._milvus.close()
            except Exception:  # closing a dead channel must not fail shutdown
                log.debug("milvus close failed", exc_info=True)
