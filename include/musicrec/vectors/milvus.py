"""Milvus helpers for versioned collections behind an alias (design §4). No Airflow imports: the
caller passes a ``pymilvus.MilvusClient`` (the Airflow ``MilvusHook`` builds it from a connection).

Blue/green: build ``<alias>_v<version>`` (create, upsert, index, verify, load), then point the alias
at it, then drop versions older than the previous one. Every step is idempotent, so a re-run after
a crash at any point completes the publish without duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pymilvus import DataType, MilvusClient

from musicrec.vectors import stale_versions, versioned

log = logging.getLogger(__name__)

ID_FIELD, VECTOR_FIELD = "track_id", "embedding"
ID_MAX_LENGTH = 64
DEFAULT_INDEX = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 16, "efConstruction": 200}}
# What milvus-lite really builds; it accepts IVF_PQ/DISKANN/SCANN and reports "Finished" without an index.
LITE_BUILT_INDEXES = {"HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "FLAT", "BRUTE_FORCE", "AUTOINDEX",
                      "SPARSE_INVERTED_INDEX"}  # the last: sparse fields (IP, or BM25 on a function output)


# milvus-lite's gRPC server keeps gRPC's default ping policy: no keepalive pings on an idle connection,
# at most one per 5 minutes during calls. pymilvus pings every 10 s, idle or not, so the server answers
# GOAWAY "too_many_pings" after ~30 s of idleness and the next call on that pooled channel fails ("Fail
# connecting to server"). Ping only during calls, and no more often than the server allows; a Milvus
# server accepts this too (a dead peer is still found by the calls' deadlines).
GRPC_OPTIONS: dict[str, Any] = {"grpc.keepalive_permit_without_calls": 0, "grpc.keepalive_time_ms": 360_000}


def connect(uri: str, **kwargs: Any) -> MilvusClient:
    """A ``MilvusClient`` whose keepalive pings suit milvus-lite as well as a server (``GRPC_OPTIONS``);
    every client of the project is made here. ``kwargs`` go to ``MilvusClient`` (token, db_name, timeout …)."""
    options = dict(GRPC_OPTIONS) | dict(kwargs.pop("grpc_options", None) or {})
    return MilvusClient(uri=uri, grpc_options=options, **kwargs)


class VectorStoreError(RuntimeError):
    pass


class DimensionMismatch(VectorStoreError):
    pass


def is_lite(client: MilvusClient) -> bool:
    try:
        return "lite" in str(client.get_server_version()).lower()
    except Exception:
        return False


def vector_dim(client: MilvusClient, name: str, field: str = VECTOR_FIELD) -> int | None:
    for f in client.describe_collection(name)["fields"]:
        if f["name"] == field:
            return int(f["params"]["dim"])
    return None


def ensure_collection(client: MilvusClient, name: str, dim: int, *, id_field: str = ID_FIELD,
                      vector_field: str = VECTOR_FIELD, description: str = "") -> bool:
    """Create ``name`` (VARCHAR pk + FLOAT_VECTOR(dim)) unless it exists; True when created.

    An existing collection with another dimension is a :class:`DimensionMismatch` (nothing is written).
    """
    if client.has_collection(name):
        have = vector_dim(client, name, vector_field)
        if have != dim:
            raise DimensionMismatch(f"collection {name} has {vector_field} dim {have}, the vectors have {dim}: "
                                    "drop it or publish under another version")
        ensure_loaded(client, name)
        return False
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field(id_field, DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
    schema.add_field(vector_field, DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema, consistency_level="Strong")
    log.info("created Milvus collection %s (dim %d)", name, dim)
    return True


def ensure_loaded(client: MilvusClient, name: str) -> None:
    """Load ``name`` when it has an index but is released — as every collection is after a server
    restart (Milvus Lite keeps data, not load state) — so queries and searches on it work."""
    if "Loaded" not in str(client.get_load_state(name).get("state")) and client.list_indexes(name):
        log.info("%s is released: loading it", name)
        client.load_collection(name)


def read_vectors(path: str | Path, id_col: str, vector_col: str = "vector", batch_rows: int = 2000
                 ) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 matrix) batches of a factors/embeddings Parquet file."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[id_col, vector_col]):
        ids = batch.column(0).to_pylist()
        vec = batch.column(1)
        dim = vec.type.list_size if hasattr(vec.type, "list_size") else None
        flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        yield ids, flat.reshape(len(ids), dim or (len(flat) // max(1, len(ids))))


def parquet_dim(path: str | Path, vector_col: str = "vector") -> int:
    field = pq.read_schema(path).field(vector_col)
    return int(field.type.list_size)


def upsert_parquet(client: MilvusClient, name: str, path: str | Path, *, id_col: str = "track_id",
                   vector_col: str = "vector", id_field: str = ID_FIELD, vector_field: str = VECTOR_FIELD,
                   batch_rows: int = 2000, delete_missing: bool = True) -> dict[str, int]:
    """Upsert every row of the Parquet file (idempotent by primary key); then delete primary keys
    the file does not hold, so the collection holds exactly the file. Returns counts."""
    dim = parquet_dim(path, vector_col)
    ensure_collection(client, name, dim, id_field=id_field, vector_field=vector_field)
    keep: set[str] = set()
    rows = 0
    for ids, vecs in read_vectors(path, id_col, vector_col, batch_rows):
        if not np.isfinite(vecs).all():
            raise VectorStoreError(f"{path} holds NaN/inf vectors: refusing to publish them")
        client.upsert(name, [{id_field: i, vector_field: v} for i, v in zip(ids, vecs.tolist(), strict=True)])
        keep.update(ids)
        rows += len(ids)
    deleted = 0
    if delete_missing:
        extra = [i for i in iter_ids(client, name, id_field) if i not in keep]
        for start in range(0, len(extra), 500):
            chunk = extra[start:start + 500]
            client.delete(name, ids=chunk)
            deleted += len(chunk)
    if hasattr(client, "flush"):
        client.flush(name)
    log.info("%s: upserted %d rows, deleted %d stale", name, rows, deleted)
    return {"rows": rows, "deleted": deleted, "dim": dim}


def iter_ids(client: MilvusClient, name: str, id_field: str = ID_FIELD, batch: int = 1000) -> Iterator[str]:
    for r in iter_rows(client, name, [id_field], batch):
        yield r[id_field]


def iter_rows(client: MilvusClient, name: str, fields: list[str], batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every row of ``name`` (``fields`` only), by ``query_iterator`` with Strong consistency (the audit
    must see every write acknowledged before it started)."""
    it = client.query_iterator(name, batch_size=batch, filter="", output_fields=fields, consistency_level="Strong")
    try:
        while rows := it.next():
            yield from rows
    finally:
        it.close()


def count(client: MilvusClient, name: str) -> int:
    res = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


@dataclass
class IndexSpec:
    index_type: str = DEFAULT_INDEX["index_type"]
    metric_type: str = DEFAULT_INDEX["metric_type"]
    params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.index_type = self.index_type.upper()
        self.metric_type = self.metric_type.upper()
        if self.params is None:
            self.params = dict(DEFAULT_INDEX["params"]) if self.index_type == "HNSW" else {}


def ensure_index(client: MilvusClient, name: str, spec: IndexSpec, *, field: str = VECTOR_FIELD,
                 timeout_s: float = 600.0, load: bool = True) -> dict[str, Any]:
    """Create the index with exactly ``spec`` (re-create it when it differs), wait until it is built,
    check it really was, load the collection (unless ``load`` is False: a collection with several
    vector fields loads once all are indexed). Returns the index description."""
    if is_lite(client) and spec.index_type not in LITE_BUILT_INDEXES:
        raise VectorStoreError(f"Milvus Lite accepts index type {spec.index_type} but never builds it; "
                               f"use one of {sorted(LITE_BUILT_INDEXES)}")
    current = _describe_index(client, name, field)
    if current is not None and not _same_index(current, spec):
        if aliases_of(client, name):
            # re-creating an index releases the collection: readers of the alias would fail meanwhile
            raise VectorStoreError(f"{name} is the target of alias(es) {aliases_of(client, name)}: its index "
                                   f"{current.get('index_type')} is never rebuilt in place; build the new index "
                                   "on a new collection and swap the alias")
        log.info("%s: index %s differs from %s: re-creating it", name, current, spec)
        client.release_collection(name)
        client.drop_index(name, index_name=current.get("index_name", field))
        current = None
    if current is None:
        params = client.prepare_index_params()
        params.add_index(field_name=field, index_type=spec.index_type, metric_type=spec.metric_type,
                         params=dict(spec.params or {}))
        client.create_index(name, params)
    deadline = time.monotonic() + timeout_s
    while True:
        desc = _describe_index(client, name, field) or {}
        total, indexed = int(desc.get("total_rows", 0)), int(desc.get("indexed_rows", 0))
        if desc.get("state") == "Finished" and indexed >= total and not int(desc.get("pending_index_rows", 0)):
            break
        if desc.get("state") == "Failed":
            raise VectorStoreError(f"{name}: index build failed: {desc}")
        if time.monotonic() > deadline:
            raise VectorStoreError(f"{name}: index not built within {timeout_s:.0f} s: {desc}")
        time.sleep(1.0)
    if not _same_index(desc, spec):
        raise VectorStoreError(f"{name}: the server applied {desc}, not {spec}")
    if not load:
        return desc
    client.load_collection(name)
    state = client.get_load_state(name).get("state")
    if "Loaded" not in str(state):
        raise VectorStoreError(f"{name}: load state {state} after load_collection")
    return desc


def aliases_of(client: MilvusClient, name: str) -> list[str]:
    """The aliases pointing at collection ``name``."""
    return list(client.list_aliases(collection_name=name).get("aliases") or [])


def describe_index(client: MilvusClient, name: str, field: str = VECTOR_FIELD) -> dict[str, Any] | None:
    """The description of ``field``'s index in ``name``, None when it has none."""
    return _describe_index(client, name, field)


def same_index(desc: dict[str, Any], spec: IndexSpec) -> bool:
    """Whether an index description matches ``spec`` (type, metric, and the params the server reports)."""
    return _same_index(desc, spec)


def _describe_index(client: MilvusClient, name: str, field: str) -> dict[str, Any] | None:
    names = client.list_indexes(name, field_name=field)
    if not names:
        return None
    return client.describe_index(name, index_name=names[0])


def _same_index(desc: dict[str, Any], spec: IndexSpec) -> bool:
    if str(desc.get("index_type", "")).upper() != spec.index_type:
        return False
    if str(desc.get("metric_type", "")).upper() != spec.metric_type:
        return False
    # a server reports the build params (M, efConstruction, nlist ...) next to the type; Lite does not
    return all(str(desc[k]) == str(v) for k, v in (spec.params or {}).items() if k in desc)


def verify_search(client: MilvusClient, name: str, path: str | Path, *, id_col: str = "track_id",
                  vector_col: str = "vector", queries: int = 16, k: int = 10, min_recall: float = 0.8,
                  field: str = VECTOR_FIELD, metric: str = "IP", search_params: dict | None = None) -> float:
    """A search plan check: ``queries`` item vectors searched in ``name`` vs an exact top-k computed from
    the file (inner product); raises unless recall@k >= ``min_recall``. Catches an index that was
    reported built but serves nothing or the wrong vectors."""
    ids: list[str] = []
    mats = []
    for batch_ids, vecs in read_vectors(path, id_col, vector_col):
        ids.extend(batch_ids)
        mats.append(vecs)
    if not ids:
        raise VectorStoreError(f"{path} holds no vectors")
    mat = np.vstack(mats)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    kk = min(k, len(ids))
    res = client.search(name, data=mat[picks].tolist(), limit=kk, anns_field=field,
                        search_params={"metric_type": metric, "params": search_params or {"ef": 64}},
                        output_fields=[ID_FIELD], consistency_level="Strong")
    exact = np.argsort(-(mat[picks] @ mat.T), axis=1, kind="stable")[:, :kk]
    hits = 0
    for row, found in zip(exact, res, strict=True):
        want = {ids[i] for i in row}
        hits += len(want & {h["id"] if "id" in h else h["entity"][ID_FIELD] for h in found})
    recall = hits / (len(picks) * kk)
    if recall < min_recall:
        raise VectorStoreError(f"{name}: search recall@{kk} {recall:.2f} < {min_recall} against exact search")
    log.info("%s: search check recall@%d = %.3f", name, kk, recall)
    return recall


def alias_target(client: MilvusClient, alias: str) -> str | None:
    # list first: describe_alias of a missing alias logs an error in pymilvus
    if alias not in (client.list_aliases().get("aliases") or []):
        return None
    return client.describe_alias(alias).get("collection_name")


def swap_alias(client: MilvusClient, alias: str, name: str) -> str | None:
    """Point ``alias`` at ``name`` (create or alter); returns the previous target."""
    before = alias_target(client, alias)
    if before == name:
        return before
    if before is None:
        client.create_alias(name, alias)
    else:
        client.alter_alias(name, alias)
    after = alias_target(client, alias)
    if after != name:
        raise VectorStoreError(f"alias {alias} points at {after} after the swap, expected {name}")
    log.info("alias %s: %s -> %s", alias, before, name)
    return before


def versions(client: MilvusClient, alias: str) -> list[str]:
    return versioned(client.list_collections(), alias)


def drop_versions(client: MilvusClient, alias: str, keep: Iterable[str]) -> list[str]:
    """Drop ``<alias>_v*`` collections not in ``keep``; never the alias' target."""
    dropped = stale_versions(client.list_collections(), alias, keep, alias_target(client, alias))
    for n in dropped:
        client.drop_collection(n)
        log.info("dropped Milvus collection %s", n)
    return dropped
