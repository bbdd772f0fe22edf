"""Qdrant hook with local mode: the provider's hook builds its client from host/port/url only."""

from __future__ import annotations

import threading
from typing import Any

from airflow.providers.qdrant.hooks.qdrant import QdrantHook
from qdrant_client import QdrantClient

# Local mode locks its folder: one client per path and process, shared by every hook instance.
_LOCAL_CLIENTS: dict[str, QdrantClient] = {}
_LOCK = threading.Lock()


class QdrantLocalHook(QdrantHook):
    """``qdrant_default`` with extra ``{"path": "/…/data/qdrant"}`` opens qdrant-client local mode;
    without ``path`` it behaves exactly like the provider's hook (a Qdrant server)."""

    hook_name = "Qdrant (local mode capable)"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = super().get_ui_field_behaviour()
        behaviour["hidden_fields"] = [f for f in behaviour.get("hidden_fields", []) if f != "extra"]
        return behaviour

    def get_conn(self) -> QdrantClient:
        path = self.get_connection(self.conn_id).extra_dejson.get("path")
        if not path:
            return super().get_conn()
        with _LOCK:
            client = _LOCAL_CLIENTS.get(path)
            if client is None:
                client = _LOCAL_CLIENTS[path] = QdrantClient(path=path)
            return client

    def test_connection(self) -> tuple[bool, str]:
        # The provider's version lets a refused connection (ResponseHandlingException) escape.
        try:
            collections = self.get_conn().get_collections().collections
        except Exception as exc:  # the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Connection established ({len(collections)} collections)"

    @classmethod
    def close_local_clients(cls) -> None:
        with _LOCK:
            for client in _LOCAL_CLIENTS.values():
                client.close()
            _LOCAL_CLIENTS.clear()
