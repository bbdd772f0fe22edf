"""The Qdrant mirror of a versioned vector set (design §4): same collection and alias names as
Milvus, point id = uuid5(NAMESPACE_URL, track_id), payload ``track_id`` + a fingerprint, dense
vectors only. No Airflow imports: the caller passes a ``QdrantClient`` (or :func:`open_store` builds one
from plain settings; local mode shares one client per folder and process, :func:`local_client`)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from qdrant_client import QdrantClient, models

from musicrec.ids import point_id
from musicrec.vectors import records as rec
from musicrec.vectors import stale_versions, versioned
from musicrec.vectors.base import (
    Capability,
    ClientStore,
    DimensionMismatch,
    Record,
    VectorStoreError,
    parquet_dim,
    read_vectors,
)

log = logging.getLogger(__name__)

DISTANCE = {"IP": models.Distance.DOT, "COSINE": models.Distance.COSINE, "L2": models.Distance.EUCLID}


def ensure_collection(client: QdrantClient, name: str, dim: int, metric: str = "IP") -> bool:
    if client.collection_exists(name):
        params = client.get_collection(name).config.params.vectors
        have = getattr(params, "size", None)
        if have != dim:
            raise DimensionMismatch(f"Qdrant collection {name} has dim {have}, the vectors have {dim}")
        return False
    client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=DISTANCE[metric.upper()]))
    log.info("created Qdrant collection %s (dim %d)", name, dim)
    return True


def iter_points(client: QdrantClient, name: str, with_vectors: bool = False, batch: int = 1000
                ) -> Iterator[models.Record]:
    offset = None
    while True:
        records, offset = client.scroll(name, limit=batch, offset=offset, with_payload=True,
                                        with_vectors=with_vectors)
        yield from records
        if offset is None:
            return


def upsert_parquet(client: QdrantClient, name: str, path: str | Path, *, payload: dict[str, Any] | None = None,
                   id_col: str = "track_id", vector_col: str = "vector", batch_rows: int = 500,
                   metric: str = "IP", delete_missing: bool = True) -> dict[str, int]:
    """Make ``name`` hold exactly the file's vectors: points whose vector or payload differ are
    upserted (by point id), points the file does not hold are deleted (unless ``delete_missing`` is
    False: the file is then a subset, e.g. the audit's repair). A re-run writes nothing."""
    dim = parquet_dim(path, vector_col)
    ensure_collection(client, name, dim, metric)
    keep: set[str] = set()
    rows = written = 0
    for ids, vecs in read_vectors(path, id_col, vector_col, batch_rows):
        if not np.isfinite(vecs).all():
            raise VectorStoreError(f"{path} holds NaN/inf vectors: refusing to publish them")
        pids = [point_id(i) for i in ids]
        values = vecs.tolist()
        payloads = [{"track_id": i, **(payload or {})} for i in ids]
        have = {str(r.id): r for r in client.retrieve(name, ids=pids, with_payload=True, with_vectors=True)}
        todo = [n for n, pid in enumerate(pids)
                if (r := have.get(pid)) is None or r.vector != values[n] or r.payload != payloads[n]]
        if todo:
            # models.Batch: several times faster than PointStruct lists in local mode
            client.upsert(name, points=models.Batch(ids=[pids[n] for n in todo], vectors=[values[n] for n in todo],
                                                    payloads=[payloads[n] for n in todo]), wait=True)
        keep.update(pids)
        rows += len(ids)
        written += len(todo)
    extra = [str(r.id) for r in iter_points(client, name) if str(r.id) not in keep] if delete_missing else []
    for start in range(0, len(extra), 500):
        client.delete(name, points_selector=models.PointIdsList(points=extra[start:start + 500]), wait=True)
    log.info("Qdrant %s: %d points (%d written), deleted %d stale", name, rows, written, len(extra))
    return {"rows": rows, "written": written, "deleted": len(extra), "dim": dim}


def alias_target(client: QdrantClient, alias: str) -> str | None:
    for a in client.get_aliases().aliases:
        if a.alias_name == alias:
            return a.collection_name
    return None


def swap_alias(client: QdrantClient, alias: str, name: str) -> str | None:
    before = alias_target(client, alias)
    if before == name:
        return before
    ops: list[Any] = []
    if before is not None:
        ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=ops)  # one atomic request
    if alias_target(client, alias) != name:
        raise VectorStoreError(f"Qdrant alias {alias} does not point at {name} after the swap")
    return before


def _names(client: QdrantClient) -> list[str]:
    return [c.name for c in client.get_collections().collections]


def versions(client: QdrantClient, alias: str) -> list[str]:
    return versioned(_names(client), alias)


def drop_versions(client: QdrantClient, alias: str, keep: Iterable[str]) -> list[str]:
    """Drop ``<alias>_v*`` collections not in ``keep``; never the alias' target."""
    dropped = stale_versions(_names(client), alias, keep, alias_target(client, alias))
    for n in dropped:
        client.delete_collection(n)
    return dropped


# ----------------------------------------------------------------------------- the record layout (lyrics)

def upsert_records(client: QdrantClient, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """Upsert the records' dense vectors (point id from track_id; payload ``{track_id, lyrics_sha256,
    model_id}``; only points whose vector or payload differ are written). Validated first; creates the
    collection when missing. Returns points written."""
    dim = rec.table_dim(table)
    if client.collection_exists(collection):
        have = getattr(client.get_collection(collection).config.params.vectors, "size", None)
        if have != dim:
            raise DimensionMismatch(f"Qdrant collection {collection} has dim {have}, the delta has {dim}")
    rec.validate(table, dim)
    if table.num_rows == 0:
        return 0
    ensure_collection(client, collection, dim, "IP")
    mat = rec.dense_matrix(table)
    ids = table.column("track_id").to_pylist()
    cols = {f: table.column(f).to_pylist() for f in rec.PAYLOAD}
    written = 0
    for start in range(0, len(ids), batch_rows):
        sl = range(start, min(start + batch_rows, len(ids)))
        pids = [point_id(ids[n]) for n in sl]
        payloads = [{"track_id": ids[n], **{f: cols[f][n] for f in rec.PAYLOAD}} for n in sl]
        values = [mat[n].tolist() for n in sl]
        have = {str(r.id): r for r in client.retrieve(collection, ids=pids, with_payload=True, with_vectors=True)}
        todo = [j for j, pid in enumerate(pids)
                if (r := have.get(pid)) is None or r.payload != payloads[j]
                or not np.allclose(np.asarray(r.vector, dtype=np.float32), values[j], atol=1e-6)]
        if todo:
            client.upsert(collection, points=models.Batch(ids=[pids[j] for j in todo],
                                                          vectors=[values[j] for j in todo],
                                                          payloads=[payloads[j] for j in todo]), wait=True)
        written += len(todo)
    log.info("Qdrant %s: %d points (%d written)", collection, len(ids), written)
    return written


def point_ids(ids: Iterable[str]) -> list[str]:
    """Point ids of keys: a track id's uuid5, or the point id itself for a ``#<point id>`` key (a point
    without ``track_id`` in its payload, as the audit names it)."""
    return [i[1:] if i.startswith("#") else point_id(i) for i in ids]


def record_key(record: models.Record) -> str:
    return (record.payload or {}).get("track_id") or f"#{record.id}"


# ----------------------------------------------------------------------------- the store

# Local mode locks its folder: one client per path and process, shared by every caller of that path.
_LOCAL_CLIENTS: dict[str, QdrantClient] = {}
_LOCK = threading.Lock()


def local_client(path: str) -> QdrantClient:
    with _LOCK:
        client = _LOCAL_CLIENTS.get(path)
        if client is None:
            client = _LOCAL_CLIENTS[path] = QdrantClient(path=path)
        return client


def close_local_clients() -> None:
    with _LOCK:
        for client in _LOCAL_CLIENTS.values():
            client.close()
        _LOCAL_CLIENTS.clear()


class QdrantStore(ClientStore):
    """:class:`musicrec.vectors.base.VectorStore` over a ``QdrantClient``: dense vectors with a payload;
    no sparse/BM25 fields and no explicit index builds (Qdrant indexes by itself)."""

    kind = "qdrant"
    capabilities = Capability.PAYLOAD
    module = sys.modules[__name__]  # the functions ClientStore delegates to

    # ---- collections
    def has_collection(self, name: str) -> bool:
        return bool(self.client.collection_exists(name))

    def collection_dim(self, name: str) -> int | None:
        return getattr(self.client.get_collection(name).config.params.vectors, "size", None)

    def ensure_collection(self, name: str, dim: int) -> bool:
        return ensure_collection(self.client, name, dim, "IP")

    def ensure_record_collection(self, name: str, dim: int, sparse: bool) -> bool:
        return ensure_collection(self.client, name, dim, "IP")  # dense only: no sparse field here

    def ready(self, name: str) -> None:
        return None

    def list_collections(self) -> list[str]:
        return _names(self.client)

    def drop_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    # ---- data (versions, aliases and upsert_records: ClientStore)
    def upsert_parquet(self, name: str, path: str | Path, *, payload: dict[str, Any] | None = None,
                       delete_missing: bool = True) -> dict[str, int]:
        return upsert_parquet(self.client, name, path, payload=payload, delete_missing=delete_missing)

    def delete(self, name: str, ids: Iterable[str]) -> int:
        pids = point_ids(sorted(set(ids)))
        if not pids or not self.client.collection_exists(name):
            return 0
        for start in range(0, len(pids), 500):
            self.client.delete(name, points_selector=models.PointIdsList(points=pids[start:start + 500]), wait=True)
        return len(pids)

    def scan(self, name: str, *, fields: Sequence[str] = (), vectors: bool = False,
             batch: int = 1000) -> Iterator[Record]:
        for r in iter_points(self.client, name, with_vectors=vectors, batch=batch):
            yield Record(record_key(r), r.vector if vectors else None, dict(r.payload or {}))

    def fetch(self, name: str, ids: list[str], *, fields: Sequence[str] = (), vectors: bool = False
              ) -> list[Record]:
        if not ids or not self.client.collection_exists(name):
            return []
        return [Record(record_key(r), r.vector if vectors else None, dict(r.payload or {}))
                for r in self.client.retrieve(name, ids=point_ids(ids), with_payload=True, with_vectors=vectors)]

    def search(self, name: str, vector: Sequence[float], k: int) -> list[tuple[str, float]]:
        res = self.client.query_points(name, query=list(vector), limit=k, with_payload=True)
        return [(record_key(p), float(p.score)) for p in res.points]

    def count(self, name: str) -> int:
        return int(self.client.count(name, exact=True).count)

    # ---- indexes: none to build (Capability.INDEX is not declared)
    def describe_index(self, name: str, field: str | None = None) -> dict[str, Any] | None:
        return None

    def same_index(self, desc: dict[str, Any], spec: Any) -> bool:
        return True

    def build_index(self, name: str, spec: Any, *, field: str | None = None, timeout_s: float = 600.0,
                    load: bool = True) -> dict[str, Any]:
        raise VectorStoreError("Qdrant builds its HNSW index by itself: no explicit index builds")

    def verify_search(self, name: str, path: str | Path) -> float:
        raise VectorStoreError("Qdrant has no explicit index to verify")


def open_store(settings: Any) -> QdrantStore:
    """The store from plain settings (``musicrec.stores.VectorStoreSettings``): ``path`` = local mode
    (one shared client per folder), else ``uri`` (+ ``token`` as the API key, ``options``)."""
    if settings.path:
        return QdrantStore(local_client(str(settings.path)))
    kwargs = dict(settings.options or {})
    if settings.token:
        kwargs["api_key"] = settings.token
    return QdrantStore(QdrantClient(url=settings.uri, **kwargs))


def wrap(client: Any) -> QdrantStore | None:
    return QdrantStore(client) if isinstance(client, QdrantClient) else None
