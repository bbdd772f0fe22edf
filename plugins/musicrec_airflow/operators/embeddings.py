"""Thin operators of ``lyrics_embeddings``: every input a templated keyword argument; each calls
``musicrec.embeddings``. The steps after ``embed`` read its small XCom (model, dim, collection) and the
run's delta parts from the registry; the hybrid collection has its own upsert and index operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.embeddings import embed
from musicrec.events import stream
from musicrec.vectors import milvus as mv
from musicrec_airflow.hooks.embedding import EmbeddingHook
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import MongoStep, StoreStep
from musicrec_airflow.params import json_value
from musicrec_airflow.sources import check_model_param, refusals_fail
from musicrec_airflow.triggers.mongo_change_stream import triggering_extras


def _int_or_none(value: Any) -> int | None:
    return int(value) if str(value).strip() not in ("", "None", "0") else None


class EmbedLyricsOperator(MongoStep):
    """Songs with found lyrics whose embedding is missing/of another model/of other lyrics → length-sorted
    batches through the model (loaded once) → delta parts ``embeddings/<slug>/run=<run_id>/`` (registered).
    Returns the model's description and counts (XCom).

    :param model: the model (``minilm``, ``bge-m3``, ``bge-m3:<dir>`` or a local directory); empty = the
        connection's.
    :param batch_size: texts per forward pass.
    :param device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; empty = the connection's.
    :param max_songs: embed at most this many songs (0 = all).
    :param part_size: songs per delta file (the unit a retried embed resumes from).
    :param max_length: tokens per text (0 = the model's).
    :param embedding_conn_id: the embedding connection (defaults for model, device, BGE-M3 path).
    :param changes_stream: the change stream (``musicrec_airflow.assets``) whose asset events name the
        songs to embed: a run triggered only by its events embeds exactly those songs; any other run
        (another asset, the schedule, a manual one) scans for every changed song. None = always scan.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("model", "batch_size", "device", "max_songs", "part_size", "max_length")

    def __init__(self, *, model: str = "", batch_size: int | str = 32, device: str = "auto",
                 max_songs: int | str = 0, part_size: int | str = 1024, max_length: int | str = 0,
                 embedding_conn_id: str = EmbeddingHook.default_conn_name, changes_stream: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.changes_stream = changes_stream
        self.model, self.batch_size, self.device = model, batch_size, device
        self.max_songs, self.part_size, self.max_length = max_songs, part_size, max_length
        self.embedding_conn_id = embedding_conn_id

    @cached_property
    def hook(self) -> EmbeddingHook:
        return EmbeddingHook(self.embedding_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        with refusals_fail():
            check_model_param(str(self.model))
        encoder = self.hook.get_conn(str(self.model), str(self.device), _int_or_none(self.max_length))
        self.log.info("encoder: %s", encoder.info())
        track_ids = (stream.watched_ids(self.db, triggering_extras(context), self.changes_stream)
                     if self.changes_stream else None)
        if track_ids is not None:
            self.log.info("change-stream run: %d songs named by the triggering events", len(track_ids))
        return embed.embed_changed(self.db, lake_root(), encoder, context["run_id"],
                                   batch_size=int(self.batch_size), part_size=int(self.part_size),
                                   max_songs=_int_or_none(self.max_songs), track_ids=track_ids)


class _LyricsStep(StoreStep):
    """A step after ``embed``: reads its small XCom (model, dim, collection).

    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    default_upstream = "embed"

    def info(self, context: Any) -> dict[str, Any]:
        """``embed``'s XCom, with the physical collection ``milvus_upsert`` put the vectors in (a new
        one when the dense index changed)."""
        info = self.upstream(context)
        placed = self.placed(context)
        if placed.get("collection"):
            info = info | {"collection": placed["collection"], "side": bool(placed.get("side"))}
        return info


class LyricsMilvusUpsertOperator(_LyricsStep):
    """The run's delta parts (``embed``'s XCom) → the hybrid Milvus collection (dense, sparse, text for
    BM25; validated before any write). Deletes nothing: removals are the prune step's. The collection is
    ``embed.placement``'s: the live one, or — when ``index_type``/``index_params`` differ from its dense
    index — a new physical collection filled with every current vector, which ``activate`` swaps in
    after a recall check. Its XCom names it.

    :param collection: the collection ``embed`` chose (a check: a different one fails); empty = no check.
    :param index_type: the dense index type; empty = keep the live one's.
    :param index_params: its build params (JSON object or text).
    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    template_fields: Sequence[str] = ("collection", "index_type", "index_params")

    def __init__(self, *, collection: str = "", index_type: str = "", index_params: str | dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.collection, self.index_type, self.index_params = collection, index_type, index_params

    def execute(self, context: Any) -> dict[str, Any]:
        info = self.upstream(context)
        if self.collection and self.collection != info["collection"]:
            raise ValueError(f"collection {self.collection} != {info['collection']} of {self.upstream_task_id}")
        dense = mv.IndexSpec(self.index_type, "IP", json_value(self.index_params)) if self.index_type else None
        # the index decides the physical collection: a change on the live one goes to a new one
        return embed.upsert_run_primary(self.serving(), self.db, lake_root(), info, context["run_id"],
                                        dense_index=dense)


class LyricsMilvusIndexOperator(BaseOperator):
    """Every vector field of the hybrid lyrics collection indexed: the dense field with the given type and
    params, the sparse ones SPARSE_INVERTED_INDEX (IP; BM25 on ``text_bm25``); each checked as built,
    then the collection loaded once. The XCom reports what ``describe_index`` says was built.

    :param collection: the physical collection (``milvus_upsert``'s XCom).
    :param index_type: the dense index type (on Milvus Lite only types it builds are accepted).
    :param metric_type: the dense metric.
    :param index_params: the dense build params (JSON object or text).
    :param timeout_s: seconds to wait for each index to be built.
    :param milvus_conn_id: the Milvus connection.
    """

    template_fields: Sequence[str] = ("collection", "index_type", "metric_type", "index_params")

    def __init__(self, *, collection: str, index_type: str = "HNSW", metric_type: str = "IP",
                 index_params: str | dict[str, Any] | None = None, timeout_s: float = 1800.0,
                 milvus_conn_id: str = MilvusHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.collection, self.index_type, self.metric_type = collection, index_type, metric_type
        self.index_params, self.timeout_s, self.milvus_conn_id = index_params, timeout_s, milvus_conn_id

    @cached_property
    def hook(self) -> MilvusHook:
        return MilvusHook(self.milvus_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        spec = mv.IndexSpec(self.index_type, self.metric_type, json_value(self.index_params))
        built = embed.build_indexes(self.hook.store(), self.collection, dense_index=spec, timeout_s=self.timeout_s)
        self.log.info("indexes of %s: %s", self.collection, built)
        return {"collection": self.collection, "fields": built}


class LyricsQdrantMirrorOperator(_LyricsStep):
    """The run's delta parts → the Qdrant mirror (dense only; pool ``qdrant_local`` on local mode).

    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        info = self.info(context)
        out = {m.kind: embed.upsert_run_mirror(m, self.db, lake_root(), info, context["run_id"])
               for m in self.mirrors()}
        return next(iter(out.values())) if len(out) == 1 else out


class LyricsActivateOperator(_LyricsStep):
    """The models document ``embedding_<slug>`` active (others retired); alias ``lyrics_embeddings`` → the
    model's collection in Milvus and Qdrant.

    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        stores = self.stores()
        return embed.activate(self.db, stores[0], stores[1:], self.info(context), root=lake_root(),
                              run_id=context["run_id"])


class LyricsStampOperator(_LyricsStep):
    """``songs.embedding = {model_id, lyrics_sha256, shard}`` for the songs of this run's parts.

    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        return embed.stamp(self.db, lake_root(), self.info(context)["model_slug"], context["run_id"])


class LyricsPruneOperator(_LyricsStep):
    """Vectors of songs whose lyrics are no longer found (or that were removed) out of both stores;
    their ``songs.embedding`` unset.

    :param upstream_task_id: the task whose XCom it reads (default ``embed``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        info = self.info(context)
        stores = self.stores()
        return embed.prune(self.db, stores[0], stores[1:], info["collection"], info["model_id"])
