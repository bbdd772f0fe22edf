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

from musicrec import registry
from musicrec.ids import point_id, slug_of  # noqa: F401 - slug_of re-exported (it lives in ids)
from musicrec.lake import storage
from musicrec.lake.reader import local_file
from musicrec.lake.storage import LakePath
from musicrec.vectors import as_store, as_stores
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd
from musicrec.vectors import records as rec
from musicrec.vectors.base import DimensionMismatch, VectorStoreError  # noqa: F401 - re-exported
from musicrec.vectors.records import (  # noqa: F401 - the record layout, re-exported under its old names
    ANALYZER,
    BM25_FIELD,
    DENSE,
    ID_FIELD,
    NORM_TOLERANCE,
    SCALAR_MAX_BYTES,
    SCALARS,
    SPARSE,
    TEXT,
    TEXT_MAX_BYTES,
    clip,
    dense_matrix,
    has_sparse,
    sparse_dicts,
    table_dim,
    validate,
)

log = logging.getLogger(__name__)

ALIAS = "lyrics_embeddings"
PRODUCER = "lyrics_embeddings"
MODEL_KIND = "embedding"
# the indexes the DAG's MilvusIndexOperator builds: field -> (index type, metric, build params)
INDEXES: dict[str, tuple[str, str, dict[str, Any]]] = {
    DENSE: ("HNSW", "IP", {"M": 16, "efConstruction": 200}),
    SPARSE: ("SPARSE_INVERTED_INDEX", "IP", {}),
    BM25_FIELD: ("SPARSE_INVERTED_INDEX", "BM25", {}),
}
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


# ----------------------------------------------------------------------------- the delta file

delta_schema = rec.record_schema
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


# ----------------------------------------------------------------------------- the stores

# The writers live with each store (``VectorStore.upsert_records``); these names are kept for callers.
ensure_milvus_collection = mv.ensure_record_collection
collection_info = mv.record_collection_info


def upsert_milvus(client, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """The records into Milvus (``musicrec.vectors.milvus.upsert_records``)."""
    return mv.upsert_records(client, collection, table, batch_rows=batch_rows)


def upsert_qdrant(client, collection: str, table: pa.Table, *, batch_rows: int = 500) -> int:
    """The records' dense vectors into the Qdrant mirror (``musicrec.vectors.qdrant.upsert_records``)."""
    return qd.upsert_records(client, collection, table, batch_rows=batch_rows)


def fingerprints(store, collection: str, batch: int = 1000) -> dict[str, str]:
    """track_id -> fingerprint of every row of ``collection`` (a name or an alias) in ``store`` (a
    :class:`~musicrec.vectors.base.VectorStore` or a client); empty when there is no such collection."""
    store = as_store(store)
    if not store.has_collection(collection) and store.alias_target(collection) is None:
        return {}
    store.ready(collection)  # Strong reads need the collection loaded (Milvus)
    return {r.key: fingerprint(r.payload.get("lyrics_sha256"), r.payload.get("model_id"))
            for r in store.scan(collection, fields=rec.PAYLOAD, batch=batch)}


milvus_fingerprints = qdrant_fingerprints = fingerprints


def delete_ids(*args: Any) -> dict[str, int]:
    """``delete_ids(stores..., collection, ids)``: delete songs from ``collection`` in every store given
    (stores, clients or None, e.g. ``(milvus, qdrant, name, ids)``; absent ids are fine). Returns the
    count per store kind."""
    *stores, collection, ids = args
    ids = sorted(set(ids))
    out = {s.kind: 0 for s in as_stores(*stores)}
    if not ids:
        return out
    for s in as_stores(*stores):
        if s.has_collection(collection):
            out[s.kind] = s.delete(collection, ids)
    log.info("%s: deleted %s", collection, out)
    return out


# ----------------------------------------------------------------------------- the model document

def active_model(db) -> dict[str, Any] | None:
    """The ``models`` document of the embedding model the alias serves."""
    return db["models"].find_one({"kind": MODEL_KIND, "status": "active"})


def _staging():
    from musicrec.settings import staging_dir

    return staging_dir()
