"""The lyrics vector set (design §4, contract in docs/architecture.md): Parquet deltas in the lake,
the hybrid Milvus collection behind alias ``lyrics_embeddings`` and its Qdrant mirror. No Airflow.

* Delta files ``embeddings/<model_slug>/run=<run_id>/part-NNNNN.parquet`` (:func:`delta_schema`), each
  registered in ``lake_partitions``; ``songs.embedding.shard`` names the file holding a song's
  current vector, so the audit's repair re-reads exactly that row (:func:`read_delta`).
* Milvus: ``track_id`` pk, ``dense`` FLOAT_VECTOR (IP), ``sparse`` SPARSE_FLOAT_VECTOR when the model
  gives lexical weights, ``text`` VARCHAR with the standard analyzer feeding a BM25 function into
  ``text_bm25``, plus ``title``/``artist``/``lyrics_sha256``/``model_id``.
* Qdrant: same collection name, point id = ``musicrec.ids.point_id(track_id)``, dense only, payload
  ``{track_id, lyrics_sha256, model_id}``.

Writers validate every row (finite, L2-normalized, the collection's dimension) before the first
write, so a bad delta never leaves a half-written collection.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pymilvus import DataType, Function, FunctionType, MilvusClient
from qdrant_client import QdrantClient, models

from musicrec import registry
from musicrec.ids import point_id, slug_of  # noqa: F401 - slug_of re-exported (it lives in ids)
from musicrec.lake import storage
from musicrec.lake.reader import local_file
from musicrec.lake.storage import LakePath
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd
from musicrec.vectors.milvus import DimensionMismatch, VectorStoreError

log = logging.getLogger(__name__)

ALIAS = "lyrics_embeddings"
PRODUCER = "lyrics_embeddings"
MODEL_KIND = "embedding"
ID_FIELD, DENSE, SPARSE, TEXT, BM25_FIELD = "track_id", "dense", "sparse", "text", "text_bm25"
SCALARS = ("title", "artist", "lyrics_sha256", "model_id")
# VARCHAR limits are in bytes (UTF-8): text is cut to fit, never rejected
TEXT_MAX_BYTES = 65535
SCALAR_MAX_BYTES = {"title": 1024, "artist": 1024, "lyrics_sha256": 64, "model_id": 256}
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}  # Milvus Lite rejects "type": "english"
# the indexes the DAG's MilvusIndexOperator builds: field -> (index type, metric, build params)
INDEXES: dict[str, tuple[str, str, dict[str, Any]]] = {
    DENSE: ("HNSW", "IP", {"M": 16, "efConstruction": 200}),
    SPARSE: ("SPARSE_INVERTED_INDEX", "IP", {}),
    BM25_FIELD: ("SPARSE_INVERTED_INDEX", "BM25", {}),
}
NORM_TOLERANCE = 1e-3
IN_CHUNK = 500


# ----------------------------------------------------------------------------- names

def collection_name(model_slug: str, index_tag: str | None = None) -> str:
    """``lyrics_embeddings_<slug>``; a dense-index change of the live collection is built on a new
    physical collection ``..._ix<6 hex of the index spec>`` and swapped in behind the alias."""
    return f"{ALIAS}_{model_slug}" + (f"_ix{index_tag}" if index_tag else "")


def is_collection_of(name: str | None, model_slug: str) -> bool:
    """Whether physical collection ``name`` holds model ``model_slug`` (plain or an ``_ix`` rebuild)."""
    plain = collection_name(model_slug)
    return name is not None and (name == plain or (name.startswith(plain + "_ix") and len(name) == len(plain) + 9))


def model_doc_id(model_slug: str) -> str:
    return f"embedding_{model_slug}"


def dataset(model_slug: str) -> str:
    return f"embeddings/{model_slug}"


def fingerprint(lyrics_sha256: str, model_id: str) -> str:
    """What the audit compares between Mongo, Milvus and Qdrant for one song."""
    return f"{model_id}:{lyrics_sha256}"


def run_dir(model_slug: str, run_id: str) -> str:
    # run ids hold ':' and '+' (manual__2026-…T…+00:00): keep them readable but path-safe
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in run_id)
    return f"{dataset(model_slug)}/run={safe}"


def part_path(model_slug: str, run_id: str, part: int) -> str:
    return f"{run_dir(model_slug, run_id)}/part-{part:05d}.parquet"


def compose_text(title: str | None, artist: str | None, lyrics: str | None) -> str:
    """What BM25 indexes: title, artist and the lyrics, cut to the VARCHAR limit."""
    return clip("\n".join(p for p in ((title or "").strip(), (artist or "").strip(), (lyrics or "").strip()) if p),
                TEXT_MAX_BYTES)


def clip(value: str | None, max_bytes: int) -> str:
    data = (value or "").encode("utf-8")
    if len(data) <= max_bytes:
        return value or ""
    return data[:max_bytes].decode("utf-8", errors="ignore")


# ----------------------------------------------------------------------------- the delta file

def delta_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("track_id", pa.string()),
        ("dense", pa.list_(pa.float32(), dim)),
        ("sparse_indices", pa.list_(pa.int32())),
        ("sparse_values", pa.list_(pa.float32())),
        ("text", pa.string()),
        ("title", pa.string()),
        ("artist", pa.string()),
        ("lyrics_sha256", pa.string()),
        ("model_id", pa.string()),
    ])


DELTA_SCHEMA = delta_schema


def delta_table(rows: Sequence[dict[str, Any]], dense: np.ndarray, sparse: Sequence[dict[int, float]] | None,
                dim: int) -> pa.Table:
    """Rows (``track_id``, ``title``, ``artist``, ``text``, ``lyrics_sha256``, ``model_id``) + their vectors."""
    dense = np.asarray(dense, dtype=np.float32).reshape(len(rows), dim)
    if sparse is not None and len(sparse) != len(rows):
        raise ValueError(f"{len(sparse)} sparse vectors for {len(rows)} rows")
    s_idx = [sorted(int(k) for k in s) for s in sparse] if sparse is not None else None
    cols: dict[str, Any] = {
        "track_id": [r["track_id"] for r in rows],
        "dense": pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1), pa.float32()), dim),
        "sparse_indices": s_idx if s_idx is not None else [None] * len(rows),
        "sparse_values": ([[float(s[k]) for k in ks] for s, ks in zip(sparse, s_idx, strict=True)]
                          if sparse is not None and s_idx is not None else [None] * len(rows)),
        "text": [r["text"] for r in rows],
        "title": [r.get("title") or "" for r in rows],
        "artist": [r.get("artist") or "" for r in rows],
        "lyrics_sha256": [r["lyrics_sha256"] for r in rows],
        "model_id": [r["model_id"] for r in rows],
    }
    schema = delta_schema(dim)
    return pa.table([pa.array(cols[f.name], f.type) if f.name != "dense" else cols["dense"] for f in schema],
                    schema=schema)


def write_delta(root: LakePath, db, rel: str, table: pa.Table, run_id: str) -> registry.PartitionRecord:
    """Write ``table`` to lake path ``rel`` (temp file, then one atomic publish) and register it."""
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] != "embeddings":
        raise ValueError(f"{rel}: a lyrics delta lives under embeddings/<model_slug>/")
    validate(table)
    model_slug = parts[1]
    fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=os.fspath(_staging()))
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        info = storage.publish_file(tmp, root / rel)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    rec = registry.PartitionRecord(path=rel, dataset=dataset(model_slug), date=None, producer=PRODUCER,
                                   rows=table.num_rows, bytes=info.bytes, sha256=info.sha256, run_id=run_id)
    registry.record(db, [rec])
    return rec


def read_delta(root: LakePath, shard_rel: str, ids: Iterable[str] | None = None) -> pa.Table:
    """The rows of one delta file, optionally only ``ids`` (the audit's repair re-reads one song)."""
    table = pq.read_table(local_file(root, shard_rel))
    if ids is not None:
        wanted = pa.array(sorted(set(ids)), pa.string())
        table = table.filter(pc.is_in(table.column("track_id"), value_set=wanted))
    return table


def table_dim(table: pa.Table) -> int:
    return int(table.schema.field("dense").type.list_size)


def has_sparse(table: pa.Table) -> bool:
    return table.num_rows > 0 and table.column("sparse_indices").null_count < table.num_rows


def dense_matrix(table: pa.Table) -> np.ndarray:
    dim = table_dim(table)
    flat = table.column("dense").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float32).reshape(table.num_rows, dim)


def sparse_dicts(table: pa.Table) -> list[dict[int, float]] | None:
    if not has_sparse(table):
        return None
    return [dict(zip(i or [], v or [], strict=True)) for i, v in
            zip(table.column("sparse_indices").to_pylist(), table.column("sparse_values").to_pylist(), strict=True)]


def validate(table: pa.Table, dim: int | None = None) -> None:
    """Refuse a delta the stores must not get: wrong dimension, NaN/inf, not normalized, bad sparse."""
    have = table_dim(table)
    if dim is not None and have != dim:
        raise DimensionMismatch(f"delta vectors have dim {have}, the collection has {dim}")
    if table.num_rows == 0:
        return
    mat = dense_matrix(table)
    if not np.isfinite(mat).all():
        raise VectorStoreError(f"{int((~np.isfinite(mat).all(axis=1)).sum())} dense vectors hold NaN/inf")
    norms = np.linalg.norm(mat, axis=1)
    if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
        raise VectorStoreError(f"dense vectors are not L2-normalized (norms {norms.min():.4f}..{norms.max():.4f})")
    for sp in sparse_dicts(table) or []:
        if not all(np.isfinite(v) for v in sp.values()):
            raise VectorStoreError("a sparse vector holds NaN/inf")
    if table.column("track_id").null_count or len(set(table.column("track_id").to_pylist())) != table.num_rows:
        raise VectorStoreError("track ids must be unique and not null")


# ----------------------------------------------------------------------------- Milvus

def ensure_milvus_collection(client: MilvusClient, name: str, dim: int, sparse: bool) -> bool:
    """Create the hybrid collection unless it exists; True when created. An existing one with another
    dense dimension or without the sparse field the model needs is a :class:`DimensionMismatch`."""
    if client.has_collection(name):
        fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
        have = int(fields[DENSE]["params"]["dim"]) if DENSE in fields else None
        if have != dim:
            raise DimensionMismatch(f"collection {name} has {DENSE} dim {have}, the vectors have {dim}")
        if sparse and SPARSE not in fields:
            raise DimensionMismatch(f"collection {name} has no {SPARSE} field but the model gives lexical weights")
        mv.ensure_loaded(client, name)
        return False
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description="lyrics embeddings (dense, sparse, BM25)")
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=mv.ID_MAX_LENGTH)
    schema.add_field(DENSE, DataType.FLOAT_VECTOR, dim=dim)
    if sparse:
        schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field(TEXT, DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True,
                     analyzer_params=ANALYZER, enable_match=True)
    schema.add_field(BM25_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    for f in SCALARS:
        schema.add_field(f, DataType.VARCHAR, max_length=SCALAR_MAX_BYTES[f])
    schema.add_function(Function(name="text_bm25_fn", function_type=FunctionType.BM25,
                                 input_field_names=[TEXT], output_field_names=[BM25_FIELD]))
    client.create_collection(name, schema=schema, consistency_level="Strong")
    log.info("created Milvus collection %s (dense dim %d, sparse %s, BM25 over %s)", name, dim, sparse, TEXT)
    return True


def collection_info(client: MilvusClient, name: str) -> dict[str, Any]:
    fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
    return {"dim": int(fields[DENSE]["params"]["dim"]), "sparse": SPARSE in fields}


def upsert_milvus(client: MilvusClient, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """Upsert the delta rows (idempotent by primary key; creates the collection when missing).
    Everything is validated first, so a refusal writes nothing. Returns rows upserted."""
    dim = table_dim(table)
    sparse = has_sparse(table)
    if client.has_collection(collection):
        info = collection_info(client, collection)
        validate(table, info["dim"])
        if sparse and not info["sparse"]:
            raise DimensionMismatch(f"{collection} has no {SPARSE} field, the delta holds lexical weights")
        if info["sparse"] and table.num_rows and not sparse:
            raise DimensionMismatch(f"{collection} expects lexical weights, the delta has none")
    else:
        validate(table, dim)
    if table.num_rows == 0:
        return 0
    ensure_milvus_collection(client, collection, dim, sparse)
    mat = dense_matrix(table)
    sp = sparse_dicts(table)
    cols = {c: table.column(c).to_pylist() for c in ("track_id", "text", *SCALARS)}
    for start in range(0, table.num_rows, batch_rows):
        rows = []
        for n in range(start, min(start + batch_rows, table.num_rows)):
            row = {ID_FIELD: cols["track_id"][n], DENSE: mat[n].tolist(), TEXT: clip(cols["text"][n], TEXT_MAX_BYTES)}
            if sp is not None:
                # an empty sparse vector is rejected by Milvus: keep the strongest token at ~0 weight
                row[SPARSE] = sp[n] or {0: 1e-6}
            for f in SCALARS:
                row[f] = clip(cols[f][n], SCALAR_MAX_BYTES[f])
            rows.append(row)
        client.upsert(collection, rows)
    if hasattr(client, "flush"):
        client.flush(collection)
    log.info("Milvus %s: upserted %d rows", collection, table.num_rows)
    return table.num_rows


def milvus_fingerprints(client: MilvusClient, collection: str, batch: int = 1000) -> dict[str, str]:
    """track_id -> fingerprint of every row (Strong consistency; the collection must be loaded)."""
    mv.ensure_loaded(client, collection)
    out: dict[str, str] = {}
    it = client.query_iterator(collection, batch_size=batch, filter="",
                               output_fields=[ID_FIELD, "lyrics_sha256", "model_id"], consistency_level="Strong")
    try:
        while rows := it.next():
            for r in rows:
                out[r[ID_FIELD]] = fingerprint(r["lyrics_sha256"], r["model_id"])
    finally:
        it.close()
    return out


# ----------------------------------------------------------------------------- Qdrant

def upsert_qdrant(client: QdrantClient, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """Upsert the delta's dense vectors (point id from track_id; only points whose vector or payload
    differ are written). Validated first; creates the collection when missing. Returns points written."""
    dim = table_dim(table)
    if client.collection_exists(collection):
        have = getattr(client.get_collection(collection).config.params.vectors, "size", None)
        if have != dim:
            raise DimensionMismatch(f"Qdrant collection {collection} has dim {have}, the delta has {dim}")
    validate(table, dim)
    if table.num_rows == 0:
        return 0
    qd.ensure_collection(client, collection, dim, "IP")
    mat = dense_matrix(table)
    ids = table.column("track_id").to_pylist()
    shas = table.column("lyrics_sha256").to_pylist()
    mids = table.column("model_id").to_pylist()
    written = 0
    for start in range(0, len(ids), batch_rows):
        sl = range(start, min(start + batch_rows, len(ids)))
        pids = [point_id(ids[n]) for n in sl]
        payloads = [{"track_id": ids[n], "lyrics_sha256": shas[n], "model_id": mids[n]} for n in sl]
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


def qdrant_fingerprints(client: QdrantClient, collection: str) -> dict[str, str]:
    """track_id -> fingerprint of every point of the mirror."""
    if not client.collection_exists(collection) and qd.alias_target(client, collection) is None:
        return {}
    return {p.payload["track_id"]: fingerprint(p.payload["lyrics_sha256"], p.payload["model_id"])
            for p in qd.iter_points(client, collection)}


# ----------------------------------------------------------------------------- deletes

def delete_ids(milvus_client: MilvusClient | None, qdrant_client: QdrantClient | None, collection: str,
               ids: Iterable[str]) -> dict[str, int]:
    """Delete songs from the collection in Milvus and in the Qdrant mirror (absent ids are fine)."""
    ids = sorted(set(ids))
    out = {"milvus": 0, "qdrant": 0}
    if not ids:
        return out
    if milvus_client is not None and milvus_client.has_collection(collection):
        for start in range(0, len(ids), IN_CHUNK):
            milvus_client.delete(collection, ids=ids[start:start + IN_CHUNK])
        if hasattr(milvus_client, "flush"):
            milvus_client.flush(collection)
        out["milvus"] = len(ids)
    if qdrant_client is not None and qdrant_client.collection_exists(collection):
        for start in range(0, len(ids), IN_CHUNK):
            qdrant_client.delete(collection, points_selector=models.PointIdsList(
                points=[point_id(i) for i in ids[start:start + IN_CHUNK]]), wait=True)
        out["qdrant"] = len(ids)
    log.info("%s: deleted %d ids from Milvus / %d from Qdrant", collection, out["milvus"], out["qdrant"])
    return out


# ----------------------------------------------------------------------------- the model document

def active_model(db) -> dict[str, Any] | None:
    """The ``models`` document of the embedding model the alias serves."""
    return db["models"].find_one({"kind": MODEL_KIND, "status": "active"})


def _staging():
    from musicrec.settings import staging_dir

    return staging_dir()
