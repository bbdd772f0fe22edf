"""Qdrant hook with local mode: the provider's hook builds its client from host/port/url only."""

from __future__ import annotations

from typing import Any

from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from qdrant_client import QdrantClient

from musicrec.stores import VectorStoreSettings, vector_store
from musicrec.vectors import qdrant as qd


class QdrantLocalHook(QdrantHook):
    """``qdrant_default`` with extra ``{"path": "/…/data/qdrant"}`` opens qdrant-client local mode
    (through the factory ``musicrec.stores``: one shared client per folder and process); without
    ``path`` it behaves exactly like the provider's hook (a Qdrant server).

    :param conn_id: the Airflow connection (conn type ``qdrant``; the provider's ``QdrantHook`` argument).
    :param kwargs: passed to ``QdrantHook``.
    """

    hook_name = "Qdrant (local mode capable)"
    store_kind = "qdrant"  # the VectorStore kind this hook builds (musicrec_airflow.hooks.stores)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = super().get_ui_field_behaviour()
        behaviour["hidden_fields"] = [f for f in behaviour.get("hidden_fields", []) if f != "extra"]
        return behaviour

    def local_settings(self) -> VectorStoreSettings | None:
        """The factory's settings for local mode (extra ``path``); None for a server, whose connection
        the provider's hook parses (url/host/port/api key ...)."""
        path = self.get_connection(self.conn_id).extra_dejson.get("path")
        return VectorStoreSettings("qdrant", path=path) if path else None

    def get_conn(self) -> QdrantClient:
        settings = self.local_settings()
        if settings is None:
            return super().get_conn()
        return vector_store(settings).client

    def store(self) -> qd.QdrantStore:
        """The ``VectorStore`` over this connection's client (``musicrec.vectors.qdrant.QdrantStore``)."""
        return qd.QdrantStore(self.get_conn())

    def test_connection(self) -> tuple[bool, str]:
        # The provider's version lets a refused connection (ResponseHandlingException) escape.
        try:
            collections = self.get_conn().get_collections().collections
        except Exception as exc:  # the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Connection established ({len(collections)} collections)"

    @classmethod
    def close_local_clients(cls) -> None:
        qd.close_local_clients()
