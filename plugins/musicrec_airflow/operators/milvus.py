"""Generic Milvus operators: Parquet vectors from the lake → a collection; build + verify + load an index.

Both delegate to ``musicrec.vectors.milvus``; both are idempotent (upsert by primary key, stale keys
deleted; an index that already matches is kept).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.catalog.listens import local_file
from musicrec.vectors import milvus as mv
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.lake import lake_root


class MilvusUpsertOperator(BaseOperator):
    """Upsert the vectors of a lake Parquet file (``id_column`` + fixed-size-list ``vector_column``) into
    ``collection`` (created when missing: VARCHAR pk + FLOAT_VECTOR), then delete keys the file lacks."""

    template_fields: Sequence[str] = ("collection", "parquet_path")

    def __init__(self, *, collection: str, parquet_path: str, id_column: str = "track_id",
                 vector_column: str = "vector", batch_size: int = 2000, delete_missing: bool = True,
                 milvus_conn_id: str = MilvusHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.collection = collection
        self.parquet_path = parquet_path
        self.id_column = id_column
        self.vector_column = vector_column
        self.batch_size = batch_size
        self.delete_missing = delete_missing
        self.milvus_conn_id = milvus_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        hook = MilvusHook(self.milvus_conn_id)
        return mv.upsert_parquet(hook.conn, self.collection, local_file(lake_root(), self.parquet_path), id_col=self.id_column,
                                 vector_col=self.vector_column, batch_rows=self.batch_size,
                                 delete_missing=self.delete_missing)


class MilvusIndexOperator(BaseOperator):
    """Create the index with the given params, wait until it is really built (on Milvus Lite only types
    it builds are accepted; ``verify_parquet`` adds a search-recall check against exact search), load."""

    template_fields: Sequence[str] = ("collection", "index_type", "metric_type", "index_params", "verify_parquet")

    def __init__(self, *, collection: str, field: str = mv.VECTOR_FIELD, index_type: str = "HNSW",
                 metric_type: str = "IP", index_params: dict[str, Any] | str | None = None,
                 verify_parquet: str = "", timeout_s: float = 1800.0,
                 milvus_conn_id: str = MilvusHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.collection = collection
        self.field = field
        self.index_type = index_type
        self.metric_type = metric_type
        self.index_params = index_params
        self.verify_parquet = verify_parquet
        self.timeout_s = timeout_s
        self.milvus_conn_id = milvus_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        client = MilvusHook(self.milvus_conn_id).conn
        params = self.index_params
        if isinstance(params, str):
            params = json.loads(params) if params.strip() else None
        spec = mv.IndexSpec(self.index_type, self.metric_type, params)
        desc = mv.ensure_index(client, self.collection, spec, field=self.field, timeout_s=self.timeout_s)
        out: dict[str, Any] = {"collection": self.collection, "index_type": desc.get("index_type"),
                               "metric_type": desc.get("metric_type"), "indexed_rows": desc.get("indexed_rows")}
        if self.verify_parquet:
            out["recall"] = mv.verify_search(client, self.collection, local_file(lake_root(), self.verify_parquet),
                                             metric=spec.metric_type, field=self.field)
        self.log.info("index: %s", out)
        return out
