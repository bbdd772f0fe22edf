"""The client factory (issue 15): a Mongo database handle, the vector stores and the lake root from
plain settings — URIs and paths, no Airflow. The Airflow hooks (``musicrec_airflow.hooks``) turn a
connection into these settings and call the factory; the local tooling (``musicrec.local``), the
benches and a serving process call it directly. Clients are built here and nowhere else.

>>> s = StoreSettings(mongo_uri="mongodb://127.0.0.1:27117/", lake_root="file:///srv/lake",
...                   vectors=(VectorStoreSettings("milvus", uri="http://127.0.0.1:19530"),
...                            VectorStoreSettings("qdrant", path="/srv/qdrant")))
>>> stores = open_stores(s)   # doctest: +SKIP
>>> stores.db, stores.vectors, stores.root   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from musicrec import vectors
from musicrec.vectors import VectorStore

DEFAULT_DB = "musicrec"


@dataclass(frozen=True)
class VectorStoreSettings:
    """One vector store: ``kind`` names its module in ``musicrec.vectors.KINDS``; ``uri`` a server,
    ``path`` a local folder (Qdrant local mode), ``token`` the credential (Milvus token, Qdrant API key),
    ``options`` whatever else the client takes (Milvus ``db_name``/``timeout``, ...)."""

    kind: str
    uri: str | None = None
    path: str | None = None
    token: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreSettings:
    """Everything a process needs to reach the stores. ``vectors`` is ordered: the first store serves
    (placement, index, the readers' alias), the others mirror it."""

    mongo_uri: str | None = None
    mongo_db: str = DEFAULT_DB
    lake_root: str | None = None
    vectors: tuple[VectorStoreSettings, ...] = ()


@dataclass
class Stores:
    db: Any = None  # pymongo Database
    vectors: list[VectorStore] = field(default_factory=list)
    root: Any = None  # LakePath
    _mongo_client: Any = None

    def close(self) -> None:
        """Close the Mongo client this factory opened (vector clients are pooled by their modules)."""
        if self._mongo_client is not None:
            self._mongo_client.close()
            self._mongo_client = None


def mongo_client(uri: str, **kwargs: Any) -> Any:
    from pymongo import MongoClient

    return MongoClient(uri, **kwargs)


def mongo_database(client_or_uri: Any, name: str | None = None, **kwargs: Any) -> Any:
    """The project's database on a ``MongoClient`` (or a URI; then a new client): ``name``, else the
    URI's default database, else ``musicrec``."""
    client = mongo_client(client_or_uri, **kwargs) if isinstance(client_or_uri, str) else client_or_uri
    if not name and isinstance(client_or_uri, str):
        from pymongo.uri_parser import parse_uri

        name = parse_uri(client_or_uri).get("database")
    return client[name or DEFAULT_DB]


def vector_store(settings: VectorStoreSettings) -> VectorStore:
    """One store from its settings (``musicrec.vectors.open_store``: the kind's module builds the client)."""
    return vectors.open_store(settings)


def vector_stores(settings: StoreSettings | tuple[VectorStoreSettings, ...] | list[VectorStoreSettings]
                  ) -> list[VectorStore]:
    items = settings.vectors if isinstance(settings, StoreSettings) else settings
    return [vector_store(s) for s in items]


def lake_root(uri: str, path_cls: Callable[[str], Any] | None = None) -> Any:
    """The lake root as a path object: ``path_cls`` (Airflow passes ``ObjectStoragePath``, which resolves
    ``s3://<conn_id>@bucket``), else ``upath.UPath``."""
    if path_cls is None:
        from upath import UPath

        path_cls = UPath
    return path_cls(uri.rstrip("/"))


def open_stores(settings: StoreSettings, *, path_cls: Callable[[str], Any] | None = None, **mongo_kwargs: Any
                ) -> Stores:
    """Every store the settings name (a part left unset stays None / empty)."""
    out = Stores()
    if settings.mongo_uri:
        out._mongo_client = mongo_client(settings.mongo_uri, **mongo_kwargs)
        out.db = mongo_database(out._mongo_client, settings.mongo_db)
    out.vectors = vector_stores(settings)
    if settings.lake_root:
        out.root = lake_root(settings.lake_root, path_cls)
    return out
