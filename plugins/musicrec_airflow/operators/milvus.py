"""Generic Milvus operators: Parquet vectors from the lake → a collection; build + verify + load an index.

Both delegate to ``musicrec.vectors.milvus``; both are idempotent (upsert by primary key, stale keys
deleted; an index that already matches is kept). Lyrics mode (``lyrics_embeddings``): the upsert takes
the delta parts of the run from ``delta_task_id``'s XCom (``musicrec.embeddings.embed``) into the hybrid
collection; the index operator builds every vector field of it (``hybrid=True``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.lake.reader import local_file
from musicrec.vectors import milvus as mv
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.lake import lake_root
from musicrec_airflow.params import truthy


class MilvusUpsertOperator(BaseOperator):
    """Upsert the vectors of a lake Parquet file (``id_column`` + fixed-size-list ``vector_column``) into
    ``collection`` (created when missing: VARCHAR pk + FLOAT_VECTOR), then delete keys the file lacks.

    With ``delta_task_id`` (lyrics mode) it upserts the lyrics delta parts that task's run wrote into the
    hybrid collection (dense, sparse, text for BM25; validated before any write) and deletes nothing:
    removals are the prune step's. The collection is ``embed.placement``'s: the live one, or — when
    ``index_type``/``index_params`` differ from its dense index — a new physical collection filled with
    every current vector, which ``activate`` swaps in after a recall check. Its XCom names it."""

    template_fields: Sequence[str] = ("collection", "parquet_path", "index_type", "index_params")

    def __init__(self, *, collection: str = "", parquet_path: str = "", id_column: str = "track_id",
                 index_type: str = "", index_params: str | dict[str, Any] | None = None,
                 vector_column: str = "vector", batch_size: int = 2000, delete_missing: bool = True,
                 delta_task_id: str | None = None, mongo_conn_id: str = "mongo_default",
                 milvus_conn_id: str = MilvusHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delta_task_id = delta_task_id
        self.index_type, self.index_params = index_type, index_params
        self.mongo_conn_id = mongo_conn_id
        self.collection = collection
        self.parquet_path = parquet_path
        self.id_column = id_column
        self.vector_column = vector_column
        self.batch_size = batch_size
        self.delete_missing = delete_missing
        self.milvus_conn_id = milvus_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        hook = MilvusHook(self.milvus_conn_id)
        if self.delta_task_id:
            from musicrec.embeddings import embed
            from musicrec_airflow.hooks.mongo import mongo_database

            info = context["ti"].xcom_pull(task_ids=self.delta_task_id)
            if not info:
                raise ValueError(f"no result from task {self.delta_task_id}")
            if self.collection and self.collection != info["collection"]:
                raise ValueError(f"collection {self.collection} != {info['collection']} of {self.delta_task_id}")
            params = self.index_params
            if isinstance(params, str):
                params = json.loads(params) if params.strip() else None
            dense = mv.IndexSpec(self.index_type, "IP", params) if self.index_type else None
            # the index decides the physical collection: a change on the live one goes to a new one
            return embed.upsert_run_primary(hook.store(), mongo_database(self.mongo_conn_id), lake_root(), info,
                                            context["run_id"], dense_index=dense)
        if not self.collection or not self.parquet_path:
            raise ValueError("collection and parquet_path are required (or delta_task_id for lyrics deltas)")
        return mv.upsert_parquet(hook.conn, self.collection, local_file(lake_root(), self.parquet_path), id_col=self.id_column,
                                 vector_col=self.vector_column, batch_rows=self.batch_size,
                                 delete_missing=self.delete_missing)


class MilvusIndexOperator(BaseOperator):
    """Create the index with the given params, wait until it is really built (on Milvus Lite only types
    it builds are accepted; ``verify_parquet`` adds a search-recall check against exact search), load.

    ``hybrid=True`` (the lyrics collection): the index type/params apply to the dense field; the sparse
    fields get SPARSE_INVERTED_INDEX (IP; BM25 on ``text_bm25``); each is checked as built, then the
    collection is loaded once. The returned XCom reports what ``describe_index`` says was built."""

    template_fields: Sequence[str] = ("collection", "index_type", "metric_type", "index_params", "verify_parquet",
                                      "hybrid")

    def __init__(self, *, collection: str, field: str = mv.VECTOR_FIELD, index_type: str = "HNSW",
                 metric_type: str = "IP", index_params: dict[str, Any] | str | None = None,
                 verify_parquet: str = "", timeout_s: float = 1800.0, hybrid: bool | str = False,
                 milvus_conn_id: str = MilvusHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hybrid = hybrid
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
        if truthy(self.hybrid):
            from musicrec.embeddings import embed

            built = embed.build_indexes(mv.MilvusStore(client), self.collection, dense_index=spec,
                                        timeout_s=self.timeout_s)
            self.log.info("indexes of %s: %s", self.collection, built)
            return {"collection": self.collection, "fields": built}
        desc = mv.ensure_index(client, self.collection, spec, field=self.field, timeout_s=self.timeout_s)
        out: dict[str, Any] = {"collection": self.collection, "index_type": desc.get("index_type"),
                               "metric_type": desc.get("metric_type"), "indexed_rows": desc.get("indexed_rows")}
        if self.verify_parquet:
            out["recall"] = mv.verify_search(client, self.collection, local_file(lake_root(), self.verify_parquet),
                                             metric=spec.metric_type, field=self.field)
        self.log.info("index: %s", out)
        return out
