"""The *record* layout of a vector set (the lyrics embeddings, design §4): one Arrow table per batch with
``track_id``, ``dense`` (fixed-size float32 list), ``sparse_indices``/``sparse_values`` (lexical weights,
null when the model has none), ``text`` (what BM25 indexes) and the scalars ``title``, ``artist``,
``lyrics_sha256``, ``model_id``. Every store writes what its capabilities allow: Milvus all of it (BM25
through a function over ``text``), Qdrant the dense vector with payload ``{track_id, lyrics_sha256,
model_id}``. Validation happens here, before any store is written, so a refusal writes nothing anywhere.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from musicrec.vectors.base import DimensionMismatch, VectorStoreError

ID_FIELD, DENSE, SPARSE, TEXT, BM25_FIELD = "track_id", "dense", "sparse", "text", "text_bm25"
SCALARS = ("title", "artist", "lyrics_sha256", "model_id")
PAYLOAD = ("lyrics_sha256", "model_id")  # the scalars a payload store keeps (what the fingerprint reads)
# VARCHAR limits are in bytes (UTF-8): text is cut to fit, never rejected
TEXT_MAX_BYTES = 65535
SCALAR_MAX_BYTES = {"title": 1024, "artist": 1024, "lyrics_sha256": 64, "model_id": 256}
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}  # Milvus Lite rejects "type": "english"
NORM_TOLERANCE = 1e-3


def clip(value: str | None, max_bytes: int) -> str:
    data = (value or "").encode("utf-8")
    if len(data) <= max_bytes:
        return value or ""
    return data[:max_bytes].decode("utf-8", errors="ignore")


def record_schema(dim: int) -> pa.Schema:
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
    """Refuse a table the stores must not get: wrong dimension, NaN/inf, not normalized, bad sparse."""
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
