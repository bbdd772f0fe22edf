"""Milvus hook in the providers' style: conn type ``milvus`` (uri, token, db), cached client. The
connection form is declared in ``musicrec_airflow.provider_info``."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.bases.hook import BaseHook
from pymilvus import MilvusClient

from musicrec.stores import VectorStoreSettings, milvus_settings, vector_store
from musicrec.vectors import milvus as mv


class MilvusHook(BaseHook):
    """Connection fields: ``extra.uri`` (or host/port), ``extra.token`` (or password), ``extra.db``/schema,
    ``extra.timeout`` (seconds).

    :param conn_id: the Airflow connection (conn type ``milvus``).
    :param kwargs: passed to ``BaseHook`` (e.g. ``logger_name``).
    """

    conn_name_attr = "conn_id"
    default_conn_name = "milvus_default"
    conn_type = "milvus"
    hook_name = "Milvus"
    store_kind = "milvus"  # the VectorStore kind this hook builds (musicrec_airflow.hooks.stores)

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def settings(self) -> VectorStoreSettings:
        """The connection as the factory's plain settings (``musicrec.stores.milvus_settings``, which the
        serving API also uses on the same ``AIRFLOW_CONN_MILVUS_DEFAULT`` value)."""
        conn = self.get_connection(self.conn_id)
        try:
            return milvus_settings(host=conn.host, port=conn.port, login=conn.login, password=conn.password,
                                   schema=conn.schema, extra=conn.extra_dejson)
        except ValueError as e:
            raise ValueError(f"connection {self.conn_id!r}: {e}") from None

    def client_kwargs(self) -> dict[str, Any]:
        """``MilvusClient`` keyword arguments of the connection (uri, token, db_name, timeout)."""
        s = self.settings()
        return {"uri": s.uri, **({"token": s.token} if s.token else {}), **dict(s.options)}

    def get_conn(self) -> MilvusClient:
        return self.store_from_settings().client

    def store_from_settings(self) -> mv.MilvusStore:
        """A new store (and client) through the factory; :meth:`store` reuses the cached client."""
        return vector_store(self.settings())

    def store(self) -> mv.MilvusStore:
        """The ``VectorStore`` over this hook's cached client (``musicrec.vectors.milvus.MilvusStore``)."""
        return mv.MilvusStore(self.conn)

    @cached_property
    def conn(self) -> MilvusClient:
        return self.get_conn()

    def test_connection(self) -> tuple[bool, str]:
        try:
            collections = self.conn.list_collections()
            return True, f"Connection established ({len(collections)} collections)"
        except Exception as exc:  # the UI shows the message
            return False, str(exc)

    # ---- versioned collections behind an alias (blue/green), delegated to musicrec.vectors.milvus

    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` points at, or None."""
        return mv.alias_target(self.conn, alias)

    def versions(self, alias: str) -> list[str]:
        """The ``<alias>_v<version>`` collections, sorted."""
        return mv.versions(self.conn, alias)

    def swap_alias(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection`` (create or alter, then checked); returns the previous target."""
        return mv.swap_alias(self.conn, alias, collection)

    def drop_versions(self, alias: str, keep: list[str]) -> list[str]:
        """Drop ``<alias>_v*`` collections outside ``keep`` (never the alias' target); returns the dropped."""
        return mv.drop_versions(self.conn, alias, keep)
