"""The vector stores the DAGs write, in order: the first serves (placement, index, the readers' alias),
the others mirror it. Adding a store: its module in ``musicrec.vectors``, its hook (with ``store_kind``,
``default_conn_name`` and ``store()``), and one line in :data:`VECTOR_STORE_HOOKS`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from musicrec.vectors import VectorStore
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.qdrant import QdrantLocalHook

VECTOR_STORE_HOOKS: tuple[type[Any], ...] = (
    MilvusHook,
    QdrantLocalHook,
)


def store_hooks(conn_ids: Mapping[str, str | None] | None = None) -> list[Any]:
    """One hook per listed store; ``conn_ids`` maps a store kind to its connection id (default: the
    hook's ``default_conn_name``)."""
    conn_ids = conn_ids or {}
    return [hook_cls(conn_id=conn_ids.get(hook_cls.store_kind) or hook_cls.default_conn_name)
            for hook_cls in VECTOR_STORE_HOOKS]


def serving_store(conn_ids: Mapping[str, str | None] | None = None) -> VectorStore:
    """The first store only: tasks outside pool ``qdrant_local`` must not open Qdrant's local folder."""
    return store_hooks(conn_ids)[0].store()


def mirror_stores(conn_ids: Mapping[str, str | None] | None = None) -> list[VectorStore]:
    return [hook.store() for hook in store_hooks(conn_ids)[1:]]


def vector_stores(conn_ids: Mapping[str, str | None] | None = None) -> list[VectorStore]:
    """Every store, in order (the serving one first)."""
    return [hook.store() for hook in store_hooks(conn_ids)]
