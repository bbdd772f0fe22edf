"""The one base class of the steps that read an upstream task's small XCom and reach MongoDB and the
vector stores (``als_training``, ``lyrics_embeddings``, ``store_audit``): connection ids as keyword-only
arguments, the hooks as cached properties, the serving/mirror split of the stores."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from pymongo.database import Database

from musicrec.vectors import VectorStore
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.hooks.qdrant import QdrantLocalHook
from musicrec_airflow.hooks.stores import store_hooks

# the task whose XCom names the physical collection a run placed its vectors in (a side build on an
# index change); both publishing DAGs call it so
PLACEMENT_TASK_ID = "milvus_upsert"


class MongoStep(BaseOperator):
    """An operator that works on the MongoDB database (most of the project's steps).

    :param mongo_conn_id: the MongoDB connection (conn type ``mongo``; database = the conn schema).
    """

    def __init__(self, *, mongo_conn_id: str = "mongo_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id

    @cached_property
    def db(self) -> Database:
        """The MongoDB database of ``mongo_conn_id`` (through the provider's ``MongoHook``), built on
        first use and reused for the task."""
        return mongo_database(self.mongo_conn_id)


class StoreStep(MongoStep):
    """Plumbing shared by the store steps; subclasses hold the one library call in ``execute``.

    :param upstream_task_id: the task whose XCom this step reads (default: the subclass's
        ``default_upstream``, e.g. ``train`` or ``embed``); None where the step reads none.
    :param placement_task_id: the task whose XCom names the physical collection the run chose.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror; extra ``path`` = local mode).
    :param mongo_conn_id: see :class:`MongoStep`.
    """

    template_fields: Sequence[str] = ()
    default_upstream: str | None = None

    def __init__(self, *, upstream_task_id: str | None = None, placement_task_id: str = PLACEMENT_TASK_ID,
                 milvus_conn_id: str = MilvusHook.default_conn_name,
                 qdrant_conn_id: str = QdrantLocalHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upstream_task_id = upstream_task_id or self.default_upstream
        self.placement_task_id = placement_task_id
        self.milvus_conn_id = milvus_conn_id
        self.qdrant_conn_id = qdrant_conn_id

    @cached_property
    def hooks(self) -> list[Any]:
        """One hook per vector store, the serving one first. Building a hook opens nothing: only
        :meth:`stores`/:meth:`mirrors` open the mirror (Qdrant's local folder, pool ``qdrant_local``)."""
        return store_hooks({"milvus": self.milvus_conn_id, "qdrant": self.qdrant_conn_id})

    def serving(self) -> VectorStore:
        """The serving store only (for tasks that may run outside pool ``qdrant_local``)."""
        return self.hooks[0].store()

    def mirrors(self) -> list[VectorStore]:
        return [hook.store() for hook in self.hooks[1:]]

    def stores(self) -> list[VectorStore]:
        """Every store, the serving one first (tasks in pool ``qdrant_local``)."""
        return [hook.store() for hook in self.hooks]

    def upstream(self, context: Any) -> dict[str, Any]:
        """The upstream task's XCom; a missing one is an error (the step has nothing to work on)."""
        result = context["ti"].xcom_pull(task_ids=self.upstream_task_id)
        if not result:
            raise ValueError(f"no result from task {self.upstream_task_id}")
        return result

    def placed(self, context: Any) -> dict[str, Any]:
        """The placement task's XCom (``{collection, side, ...}``), or {} before/without it."""
        return context["ti"].xcom_pull(task_ids=self.placement_task_id) or {}
