"""Generic Milvus operators: Parquet vectors from the lake → a collection; build + verify + load an index.

Both delegate to ``musicrec.vectors.milvus``; both are idempotent (upsert by primary key, stale keys
deleted; an index that already matches is kept). The hybrid lyrics collection has its own operators
(``operators.embeddings.LyricsMilvusUpsertOperator`` / ``LyricsMilvusIndexOperator``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.lake.reader import local_file
from musicrec.vectors import milvus as mv
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.lake import lake_root
from musicrec_airflow.params import json_value


class MilvusUpsertOperator(BaseOperator):
    """Upsert the vectors of a lake Parquet file (``id_column`` + fixed-size-list ``vector_column``) into
    ``collection`` (created when missing: VARCHAR pk + FLOAT_VECTOR), then delete keys the file lacks.

    :param collection: the target collection.
    :param parquet_path: the Parquet file, relative to the lake root.
    :param id_column: the primary-key column.
    :param vector_column: the vector column.
    :param batch_size: rows per upsert batch.
    :param delete_missing: delete keys of the collection the file lacks.
    :param milvus_conn_id: the Milvus connection.
    """

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

    @cached_property
    def hook(self) -> MilvusHook:
        return MilvusHook(self.milvus_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.collection or not self.parquet_path:
            raise ValueError("collection and parquet_path are required")
        return mv.upsert_parquet(self.hook.conn, self.collection, local_file(lake_root(), self.parquet_path),
                                 id_col=self.id_column, vector_col=self.vector_column, batch_rows=self.batch_size,
                                 delete_missing=self.delete_missing)


class MilvusIndexOperator(BaseOperator):
    """Create the index with the given params, wait until it is really built (on Milvus Lite only types
    it builds are accepted; ``verify_parquet`` adds a search-recall check against exact search), load.
    The returned XCom reports what ``describe_index`` says was built.

    :param collection: the collection.
    :param field: the vector field to index.
    :param index_type: the index type.
    :param metric_type: the metric.
    :param index_params: the build params (JSON object or text; empty = Milvus's defaults).
    :param verify_parquet: a lake Parquet file of the same vectors for the recall check; empty = none.
    :param timeout_s: seconds to wait for the index to be built.
    :param milvus_conn_id: the Milvus connection.
    """

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

    @cached_property
    def hook(self) -> MilvusHook:
        return MilvusHook(self.milvus_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        spec = mv.IndexSpec(self.index_type, self.metric_type, json_value(self.index_params))
        client = self.hook.conn
        desc = mv.ensure_index(client, self.collection, spec, field=self.field, timeout_s=self.timeout_s)
        out: dict[str, Any] = {"collection": self.collection, "index_type": desc.get("index_type"),
                               "metric_type": desc.get("metric_type"), "indexed_rows": desc.get("indexed_rows")}
        if self.verify_parquet:
            out["recall"] = mv.verify_search(client, self.collection, local_file(lake_root(), self.verify_parquet),
                                             metric=spec.metric_type, field=self.field)
        self.log.info("index: %s", out)
        return out
