"""Where the pages read from: MongoDB, the lake and the serving vector store through the project's hooks
(the same connections and Variable as the workers; the clients come from the factory ``musicrec.stores``),
and Airflow's own metadata database for what runs left in XCom. Never the Qdrant mirror: its local
folder belongs to pool ``qdrant_local``'s tasks."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MONGO_CONN_ID = "mongo_default"
LYRICS_DAG, LYRICS_FETCH_TASKS = "lyrics_enrichment", ("fetch_dump", "fetch_api")
ALS_DAG, ALS_TRAIN_TASK = "als_training", "train"
AUDIT_DAG = "store_audit"
RETRY_S = 30.0


@dataclass
class Sources:
    """The stores one request reads: ``db`` (pymongo Database), ``root`` (the lake root path), ``store``
    (the serving vector store; None when it cannot be reached: the pages then say what they cannot know)."""

    db: Any
    root: Any
    store: Any = None
    store_error: str | None = None


_lock = threading.Lock()
_cached: dict[str, Any] = {}


def _serving_store() -> tuple[Any, str | None]:
    from musicrec_airflow.hooks.stores import serving_store

    try:
        return serving_store(), None
    except Exception as e:  # Milvus down or unset: the pages render from Mongo and the lake
        log.warning("the serving vector store is unreachable: %s", e)
        return None, f"{type(e).__name__}: {e}"


def _open() -> Sources:
    from musicrec_airflow.hooks.mongo import mongo_database
    from musicrec_airflow.lake import lake_root

    store, error = _serving_store()
    return Sources(db=mongo_database(MONGO_CONN_ID), root=lake_root(), store=store, store_error=error)


def get_sources() -> Sources:
    """The FastAPI dependency: the clients, made on first use and shared by the process's requests
    (pymongo's and pymilvus' clients are thread-safe); an unreachable vector store is retried on the
    next request after ``RETRY_S`` (the Mongo client and the lake root are kept)."""
    with _lock:
        src = _cached.get("sources")
        if src is None:
            src = _cached["sources"] = _open()
        elif src.store is None and time.monotonic() >= _cached.get("retry_at", 0):
            src.store, src.store_error = _serving_store()
        if src.store is None:  # a down Milvus costs one connect timeout per RETRY_S, not one per page
            _cached["retry_at"] = time.monotonic() + RETRY_S
        return src


def reset() -> None:
    _cached.clear()


# ----------------------------------------------------------------------------- Airflow's metadata

def _xcoms(dag_id: str, task_ids: tuple[str, ...], run_id: str | None = None, limit: int = 2000
           ) -> list[tuple[Any, Any]]:
    """(XCom row, value) of ``return_value`` of ``task_ids`` in ``dag_id`` (one run or all), newest first."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.task_id.in_(task_ids),
                                    XComModel.key == "return_value")
    if run_id is not None:
        query = query.where(XComModel.run_id == run_id)
    with create_session() as session:
        rows = session.scalars(query.order_by(XComModel.timestamp.desc()).limit(limit)).all()
        return [(r, XComModel.deserialize_value(r)) for r in rows]


def trained_version(run_id: str) -> str | None:
    """The version an ``als_training`` run's ``train`` task returned (None before it ran)."""
    try:
        for _, value in _xcoms(ALS_DAG, (ALS_TRAIN_TASK,), run_id):
            if isinstance(value, dict) and value.get("version"):
                return str(value["version"])
    except Exception:
        log.warning("cannot read the train XCom of %s", run_id, exc_info=True)
    return None


def lyrics_chunks(limit: int = 2000) -> list[dict[str, Any]] | None:
    """Every fetch chunk's result of the ``lyrics_enrichment`` runs (provider, songs, seconds, statuses),
    with its run id and time; None when Airflow's database cannot be read."""
    try:
        out = []
        for row, value in _xcoms(LYRICS_DAG, LYRICS_FETCH_TASKS, limit=limit):
            if isinstance(value, dict):
                out.append(value | {"run_id": row.run_id, "at": row.timestamp.isoformat() if row.timestamp else None,
                                    "provider": value.get("provider") or row.task_id.removeprefix("fetch_")})
        return out
    except Exception:
        log.warning("cannot read the lyrics runs' XCom", exc_info=True)
        return None
