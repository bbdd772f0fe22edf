"""Milvus helpers for versioned collections behind an alias (design §4). No Airflow imports: the
caller passes a ``pymilvus.MilvusClient`` (the Airflow ``MilvusHook`` builds it from a connection).

Blue/green: build ``<alias>_v<version>`` (create, upsert, index, verify, load), then point the alias
at it, then drop versions older than the previous one. Every step is idempotent, so a re-run after
a crash at any point completes the publish without duplicates.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pymilvus import DataType, Function, FunctionType, MilvusClient

from musicrec.vectors import records as rec
from musicrec.vectors import stale_versions, versioned
from musicrec.vectors.base import (
    Capability,
    ClientStore,  # noqa: F401 - re-exported: callers used to import them from here
    DimensionMismatch,
    Record,
    VectorStoreError,
    parquet_dim,
    read_vectors,
)

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


# ----------------------------------------------------------------------------- the record layout (lyrics)

def ensure_record_collection(client: MilvusClient, name: str, dim: int, sparse: bool) -> bool:
    """Create the hybrid collection of the record layout (``musicrec.vectors.records``) unless it exists;
    True when created. An existing one with another dense dimension or without the sparse field the
    model needs is a :class:`DimensionMismatch`."""
    if client.has_collection(name):
        fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
        have = int(fields[rec.DENSE]["params"]["dim"]) if rec.DENSE in fields else None
        if have != dim:
            raise DimensionMismatch(f"collection {name} has {rec.DENSE} dim {have}, the vectors have {dim}")
        if sparse and rec.SPARSE not in fields:
            raise DimensionMismatch(f"collection {name} has no {rec.SPARSE} field but the model gives lexical weights")
        ensure_loaded(client, name)
        return False
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description="lyrics embeddings (dense, sparse, BM25)")
    schema.add_field(rec.ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
    schema.add_field(rec.DENSE, DataType.FLOAT_VECTOR, dim=dim)
    if sparse:
        schema.add_field(rec.SPARSE, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field(rec.TEXT, DataType.VARCHAR, max_length=rec.TEXT_MAX_BYTES, enable_analyzer=True,
                     analyzer_params=rec.ANALYZER, enable_match=True)
    schema.add_field(rec.BM25_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    for f in rec.SCALARS:
        schema.add_field(f, DataType.VARCHAR, max_length=rec.SCALAR_MAX_BYTES[f])
    schema.add_function(Function(name="text_bm25_fn", function_type=FunctionType.BM25,
                                 input_field_names=[rec.TEXT], output_field_names=[rec.BM25_FIELD]))
    client.create_collection(name, schema=schema, consistency_level="Strong")
    log.info("created Milvus collection %s (dense dim %d, sparse %s, BM25 over %s)", name, dim, sparse, rec.TEXT)
    return True


def record_collection_info(client: MilvusClient, name: str) -> dict[str, Any]:
    fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    return {"dim": int(fields[rec.DENSE]["params"]["dim"]), "sparse": rec.SPARSE in fields}


def upsert_records(client: MilvusClient, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """Upsert the record rows (idempotent by primary key; creates the collection when missing).
    Everything is validated first, so a refusal writes nothing. Returns rows upserted."""
    dim = rec.table_dim(table)
    sparse = rec.has_sparse(table)
    if client.has_collection(collection):
        info = record_collection_info(client, collection)
        rec.validate(table, info["dim"])
        if sparse and not info["sparse"]:
            raise DimensionMismatch(f"{collection} has no {rec.SPARSE} field, the delta holds lexical weights")
        if info["sparse"] and table.num_rows and not sparse:
            raise DimensionMismatch(f"{collection} expects lexical weights, the delta has none")
    else:
        rec.validate(table, dim)
    if table.num_rows == 0:
        return 0
    ensure_record_collection(client, collection, dim, sparse)
    mat = rec.dense_matrix(table)
    sp = rec.sparse_dicts(table)
    cols = {c: table.column(c).to_pylist() for c in ("track_id", "text", *rec.SCALARS)}
    for start in range(0, table.num_rows, batch_rows):
        rows = []
        for n in range(start, min(start + batch_rows, table.num_rows)):
            row = {rec.ID_FIELD: cols["track_id"][n], rec.DENSE: mat[n].tolist(),
                   rec.TEXT: rec.clip(cols["text"][n], rec.TEXT_MAX_BYTES)}
            if sp is not None:
                # an empty sparse vector is rejected by Milvus: keep the strongest token at ~0 weight
                row[rec.SPARSE] = sp[n] or {0: 1e-6}
            for f in rec.SCALARS:
                row[f] = rec.clip(cols[f][n], rec.SCALAR_MAX_BYTES[f])
            rows.append(row)
        client.upsert(collection, rows)
    if hasattr(client, "flush"):
        client.flush(collection)
    log.info("Milvus %s: upserted %d rows", collection, table.num_rows)
    return table.num_rows


def delete_ids(client: MilvusClient, name: str, ids: Iterable[str], chunk: int = 500) -> int:
    """Delete primary keys (absent ones are fine; nothing when the collection is missing)."""
    ids = sorted(set(ids))
    if not ids or not client.has_collection(name):
        return 0
    for start in range(0, len(ids), chunk):
        client.delete(name, ids=ids[start:start + chunk])
    if hasattr(client, "flush"):
        client.flush(name)
    return len(ids)


def dense_field(client: MilvusClient, name: str) -> str:
    """The collection's dense vector field: ``embedding`` (vector files) or ``dense`` (records)."""
    for f in client.describe_collection(name)["fields"]:
        if f.get("type") == DataType.FLOAT_VECTOR:
            return f["name"]
    return VECTOR_FIELD


# ----------------------------------------------------------------------------- the store

class MilvusStore(ClientStore):
    """:class:`musicrec.vectors.base.VectorStore` over a ``MilvusClient``: every capability (explicit
    indexes, sparse vectors, BM25). Its collections have a fixed schema, so the ALS version lives in the
    collection name, not in a payload."""

    kind = "milvus"
    capabilities = Capability.INDEX | Capability.SPARSE | Capability.BM25
    module = sys.modules[__name__]  # the functions ClientStore delegates to

    # ---- collections
    def has_collection(self, name: str) -> bool:
        return bool(self.client.has_collection(name))

    def collection_dim(self, name: str) -> int | None:
        return vector_dim(self.client, name, dense_field(self.client, name))

    def ensure_collection(self, name: str, dim: int) -> bool:
        return ensure_collection(self.client, name, dim)

    def ensure_record_collection(self, name: str, dim: int, sparse: bool) -> bool:
        return ensure_record_collection(self.client, name, dim, sparse)

    def ready(self, name: str) -> None:
        ensure_loaded(self.client, name)

    def list_collections(self) -> list[str]:
        return list(self.client.list_collections())

    def drop_collection(self, name: str) -> None:
        self.client.drop_collection(name)

    # ---- data (versions, aliases and upsert_records: ClientStore)
    def upsert_parquet(self, name: str, path: str | Path, *, payload: dict[str, Any] | None = None,
                       delete_missing: bool = True) -> dict[str, int]:
        # no payload: the fixed schema has no field for it (the version is in the collection name)
        return upsert_parquet(self.client, name, path, id_col="track_id", delete_missing=delete_missing)

    def delete(self, name: str, ids: Iterable[str]) -> int:
        return delete_ids(self.client, name, ids)

    def scan(self, name: str, *, fields: Sequence[str] = (), vectors: bool = False,
             batch: int = 1000) -> Iterator[Record]:
        vec = dense_field(self.client, name) if vectors else None
        wanted = [ID_FIELD, *fields, *([vec] if vec else [])]
        for r in iter_rows(self.client, name, wanted, batch):
            yield Record(r[ID_FIELD], r.get(vec) if vec else None, {f: r.get(f) for f in fields})

    def fetch(self, name: str, ids: list[str], *, fields: Sequence[str] = (), vectors: bool = False
              ) -> list[Record]:
        if not ids or not self.client.has_collection(name):
            return []
        vec = dense_field(self.client, name) if vectors else None
        wanted = [ID_FIELD, *fields, *([vec] if vec else [])]
        out: list[Record] = []
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for r in self.client.query(name, filter=f"{ID_FIELD} in {json.dumps(part)}", output_fields=wanted,
                                       consistency_level="Strong"):
                out.append(Record(r[ID_FIELD], r.get(vec) if vec else None, {f: r.get(f) for f in fields}))
        return out

    def search(self, name: str, vector: Sequence[float], k: int) -> list[tuple[str, float]]:
        res = self.client.search(name, data=[list(vector)], limit=k, anns_field=dense_field(self.client, name),
                                 search_params={"metric_type": "IP", "params": {"ef": max(64, k)}},
                                 output_fields=[ID_FIELD])
        return [(hit.get("id") or hit["entity"][ID_FIELD], float(hit["distance"])) for hit in res[0]]

    def count(self, name: str) -> int:
        return count(self.client, name)

    # ---- indexes
    def describe_index(self, name: str, field: str | None = None) -> dict[str, Any] | None:
        return describe_index(self.client, name, field or VECTOR_FIELD)

    def same_index(self, desc: dict[str, Any], spec: IndexSpec) -> bool:
        return same_index(desc, spec)

    def build_index(self, name: str, spec: IndexSpec, *, field: str | None = None, timeout_s: float = 600.0,
                    load: bool = True) -> dict[str, Any]:
        return ensure_index(self.client, name, spec, field=field or VECTOR_FIELD, timeout_s=timeout_s, load=load)

    def verify_search(self, name: str, path: str | Path) -> float:
        return verify_search(self.client, name, path)


def open_store(settings: Any) -> MilvusStore:
    """The store from plain settings (``musicrec.stores.VectorStoreSettings``: ``uri``, ``token``,
    ``options`` such as ``db_name`` and ``timeout``)."""
    kwargs = dict(settings.options or {})
    if settings.token:
        kwargs["token"] = settings.token
    return MilvusStore(connect(settings.uri, **kwargs))


def wrap(client: Any) -> MilvusStore | None:
    return MilvusStore(client) if isinstance(client, MilvusClient) else None
