"""Thin operators of ``lyrics_embeddings``: resolve connections and params; call ``musicrec.embeddings``.

The Milvus steps use the generic ``MilvusUpsertOperator`` / ``MilvusIndexOperator`` (their lyrics
mode); the others read the embed task's small XCom (model, dim, collection) and the run's delta
parts from the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.embeddings import embed
from musicrec_airflow.hooks.embedding import EmbeddingHook
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.hooks.qdrant import QdrantLocalHook
from musicrec_airflow.hooks.stores import mirror_stores, vector_stores
from musicrec_airflow.lake import lake_root
from musicrec_airflow.sources import check_model_param, refusals_fail


def _int_or_none(value: Any) -> int | None:
    return int(value) if str(value).strip() not in ("", "None", "0") else None


class EmbedLyricsOperator(BaseOperator):
    """Songs with found lyrics whose embedding is missing/of another model/of other lyrics → length-sorted
    batches through the model (loaded once) → delta parts ``embeddings/<slug>/run=<run_id>/`` (registered).
    Returns the model's description and counts (XCom)."""

    template_fields: Sequence[str] = ("model", "batch_size", "device", "max_songs", "part_size", "max_length")

    def __init__(self, *, model: str = "", batch_size: int | str = 32, device: str = "auto",
                 max_songs: int | str = 0, part_size: int | str = 1024, max_length: int | str = 0,
                 embedding_conn_id: str = EmbeddingHook.default_conn_name, mongo_conn_id: str = "mongo_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.batch_size, self.device = model, batch_size, device
        self.max_songs, self.part_size, self.max_length = max_songs, part_size, max_length
        self.embedding_conn_id, self.mongo_conn_id = embedding_conn_id, mongo_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        with refusals_fail():
            check_model_param(str(self.model))
        encoder = EmbeddingHook(self.embedding_conn_id).get_conn(str(self.model), str(self.device),
                                                                 _int_or_none(self.max_length))
        self.log.info("encoder: %s", encoder.info())
        return embed.embed_changed(mongo_database(self.mongo_conn_id), lake_root(), encoder, context["run_id"],
                                   batch_size=int(self.batch_size), part_size=int(self.part_size),
                                   max_songs=_int_or_none(self.max_songs))


class _LyricsStep(BaseOperator):
    template_fields: Sequence[str] = ()

    def __init__(self, *, embed_task_id: str = "embed", mongo_conn_id: str = "mongo_default",
                 milvus_conn_id: str = MilvusHook.default_conn_name,
                 qdrant_conn_id: str = QdrantLocalHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embed_task_id, self.mongo_conn_id = embed_task_id, mongo_conn_id
        self.milvus_conn_id, self.qdrant_conn_id = milvus_conn_id, qdrant_conn_id

    def info(self, context: Any) -> dict[str, Any]:
        info = context["ti"].xcom_pull(task_ids=self.embed_task_id)
        if not info:
            raise ValueError(f"no result from task {self.embed_task_id}")
        # where milvus_upsert put the vectors: a new physical collection when the dense index changed
        placed = context["ti"].xcom_pull(task_ids="milvus_upsert") or {}
        if placed.get("collection"):
            info = info | {"collection": placed["collection"], "side": bool(placed.get("side"))}
        return info

    def conn_ids(self) -> dict[str, str]:
        return {"milvus": self.milvus_conn_id, "qdrant": self.qdrant_conn_id}


class LyricsQdrantMirrorOperator(_LyricsStep):
    """The run's delta parts → the Qdrant mirror (dense only; pool ``qdrant_local`` on local mode)."""

    def execute(self, context: Any) -> dict[str, Any]:
        db, root, info = mongo_database(self.mongo_conn_id), lake_root(), self.info(context)
        out = {m.kind: embed.upsert_run_mirror(m, db, root, info, context["run_id"])
               for m in mirror_stores(self.conn_ids())}
        return next(iter(out.values())) if len(out) == 1 else out


class LyricsActivateOperator(_LyricsStep):
    """The models document ``embedding_<slug>`` active (others retired); alias ``lyrics_embeddings`` → the
    model's collection in Milvus and Qdrant."""

    def execute(self, context: Any) -> dict[str, Any]:
        stores = vector_stores(self.conn_ids())
        return embed.activate(mongo_database(self.mongo_conn_id), stores[0], stores[1:], self.info(context),
                              root=lake_root(), run_id=context["run_id"])


class LyricsStampOperator(_LyricsStep):
    """``songs.embedding = {model_id, lyrics_sha256, shard}`` for the songs of this run's parts."""

    def execute(self, context: Any) -> dict[str, Any]:
        return embed.stamp(mongo_database(self.mongo_conn_id), lake_root(), self.info(context)["model_slug"],
                           context["run_id"])


class LyricsPruneOperator(_LyricsStep):
    """Vectors of songs whose lyrics are no longer found (or that were removed) out of both stores;
    their ``songs.embedding`` unset."""

    def execute(self, context: Any) -> dict[str, Any]:
        info = self.info(context)
        stores = vector_stores(self.conn_ids())
        return embed.prune(mongo_database(self.mongo_conn_id), stores[0], stores[1:], info["collection"],
                           info["model_id"])
