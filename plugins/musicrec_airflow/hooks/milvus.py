"""Milvus hook in the providers' style: conn type ``milvus`` (uri, token, db), cached client."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.bases.hook import BaseHook
from pymilvus import MilvusClient


class MilvusHook(BaseHook):
    """Connection fields: ``extra.uri`` (or host/port), ``extra.token`` (or password), ``extra.db``/schema."""

    conn_name_attr = "conn_id"
    default_conn_name = "milvus_default"
    conn_type = "milvus"
    hook_name = "Milvus"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["login"], "relabeling": {"password": "Token", "schema": "Database"}}

    def client_kwargs(self) -> dict[str, Any]:
        conn = self.get_connection(self.conn_id)
        extra = conn.extra_dejson
        uri = extra.get("uri")
        if not uri:
            if not conn.host:
                raise ValueError(f"connection {self.conn_id!r} needs extra.uri or a host")
            uri = conn.host if "://" in conn.host else f"http://{conn.host}:{conn.port or 19530}"
        kwargs: dict[str, Any] = {"uri": uri}
        token = extra.get("token") or conn.password
        if token:
            kwargs["token"] = token
        db = extra.get("db") or conn.schema
        if db:
            kwargs["db_name"] = db
        return kwargs

    def get_conn(self) -> MilvusClient:
        return MilvusClient(**self.client_kwargs())

    @cached_property
    def conn(self) -> MilvusClient:
        return self.get_conn()

    def test_connection(self) -> tuple[bool, str]:
        try:
            collections = self.conn.list_collections()
            return True, f"Connection established ({len(collections)} collections)"
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
