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

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote, urlencode, urlsplit

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


def async_mongo_database(uri: str, name: str | None = None, **kwargs: Any) -> Any:
    """pymongo's async client on ``uri`` and the project's database on it (change streams in the
    triggerer); ``name`` like :func:`mongo_database`. Close it with ``await db.client.close()``."""
    from pymongo import AsyncMongoClient
    from pymongo.uri_parser import parse_uri

    client = AsyncMongoClient(uri, **kwargs)
    return client[name or parse_uri(uri).get("database") or DEFAULT_DB]


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


# ----------------------------------------------------------------------------- connection values → settings
# The one place a connection's fields become store settings. The Airflow hooks pass a Connection's
# attributes; processes without Airflow (the serving API) pass an ``AIRFLOW_CONN_*`` value through
# :func:`connection_fields`, so both read the workers' connections the same way.

DEFAULT_MILVUS_PORT = 19530


def connection_fields(value: str) -> dict[str, Any]:
    """An ``AIRFLOW_CONN_*`` value (JSON or URI form) as Airflow's Connection fields (conn_type, host,
    port, login, password, schema, extra)."""
    value = value.strip()
    if value.startswith("{"):
        doc = json.loads(value)
        extra = doc.get("extra") or {}
        return {"conn_type": doc.get("conn_type"), "host": doc.get("host"), "port": doc.get("port"),
                "login": doc.get("login"), "password": doc.get("password"), "schema": doc.get("schema"),
                "extra": json.loads(extra) if isinstance(extra, str) else extra}
    parts = urlsplit(value)
    query = dict(parse_qsl(parts.query))
    extra = json.loads(query.pop("__extra__")) if "__extra__" in query else query
    return {"conn_type": parts.scheme.replace("-", "_"), "host": unquote(parts.hostname or "") or None,
            "port": parts.port, "login": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "schema": unquote(parts.path.lstrip("/")) or None, "extra": extra}


def milvus_settings(*, host: str | None = None, port: int | None = None, login: str | None = None,
                    password: str | None = None, schema: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> VectorStoreSettings:
    """A ``milvus`` connection's fields as store settings: ``extra.uri`` wins over host/port, ``extra.token``
    over ``login:password`` (or the password alone: an API key); ``extra.db`` or the schema is the
    database; ``extra.timeout`` seconds to wait for the server (pymilvus' default is long)."""
    extra = dict(extra or {})
    uri = extra.get("uri")
    if not uri:
        if not host:
            raise ValueError("a milvus connection needs extra.uri or a host")
        uri = host if "://" in host else f"http://{host}:{port or DEFAULT_MILVUS_PORT}"
    token = extra.get("token") or (f"{login}:{password}" if login and password else password) or None
    options: dict[str, Any] = {}
    if extra.get("db") or schema:
        options["db_name"] = extra.get("db") or schema
    if extra.get("timeout"):
        options["timeout"] = float(extra["timeout"])
    return VectorStoreSettings("milvus", uri=uri, token=token, options=options)


def mongo_uri(*, host: str | None = None, port: int | None = None, login: str | None = None,
              password: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """A ``mongo`` connection's fields as a ``mongodb://`` URI, the way the Mongo provider builds it
    (``extra.srv`` → ``mongodb+srv``; the other extras become URI options)."""
    extra = dict(extra or {})
    srv = str(extra.pop("srv", "")).lower() == "true"
    auth = (quote_plus(login) + (":" + quote_plus(password) if password else "") + "@") if login else ""
    where = (host or "127.0.0.1") + (f":{port}" if port else "")
    query = ("?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in extra.items()})
             if extra else "")
    return f"{'mongodb+srv' if srv else 'mongodb'}://{auth}{where}/{query}"


def mongo_from_conn(value: str | None) -> tuple[str | None, str | None]:
    """(mongodb:// URI, database) of an ``AIRFLOW_CONN_MONGO_DEFAULT`` value; (None, None) without one."""
    if not value:
        return None, None
    c = connection_fields(value)
    return mongo_uri(host=c["host"], port=c["port"], login=c["login"], password=c["password"],
                     extra=c["extra"]), c["schema"]


def milvus_from_conn(value: str | None) -> VectorStoreSettings | None:
    """The store settings of an ``AIRFLOW_CONN_MILVUS_DEFAULT`` value; None without one."""
    if not value:
        return None
    c = connection_fields(value)
    return milvus_settings(host=c["host"], port=c["port"], login=c["login"], password=c["password"],
                           schema=c["schema"], extra=c["extra"])
