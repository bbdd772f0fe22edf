"""The Qdrant mirror of a versioned vector set (design §4): same collection and alias names as
Milvus, point id = uuid5(NAMESPACE_URL, track_id), payload ``track_id`` + a fingerprint, dense
vectors only. No Airflow imports: the caller passes a ``QdrantClient``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from musicrec.ids import point_id
from musicrec.vectors import stale_versions, versioned
from musicrec.vectors.milvus import DimensionMismatch, VectorStoreError, parquet_dim, read_vectors

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
