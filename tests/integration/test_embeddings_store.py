"""The lyrics vector set's store contract (``musicrec.embeddings.store``) against the embedded engines:
delta round trip + registry, Milvus hybrid collection and Qdrant mirror upserts, refusals that write
nothing, deletes."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient
from upath import UPath

from musicrec.embeddings import store
from musicrec.vectors import milvus as mv
from musicrec.vectors.milvus import DimensionMismatch, VectorStoreError

pytestmark = pytest.mark.integration


def make_table(n: int, dim: int, *, sparse: bool = True, model_id: str = "test/model", seed: int = 0,
               prefix: str = "t"):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    rows = [{"track_id": f"{prefix}{i}", "title": f"Song {i}", "artist": "Band",
             "text": store.compose_text(f"Song {i}", "Band", ("rain falls" if i % 2 else "Привет, мир") + f" {i}"),
             "lyrics_sha256": f"{i:064x}", "model_id": model_id} for i in range(n)]
    sp = [{i: 0.5, 1000 + i: 0.25} for i in range(n)] if sparse else None
    return store.delta_table(rows, dense, sp, dim)


def build_indexes(milvus, name):
    for field, (itype, metric, params) in store.INDEXES.items():
        mv.ensure_index(milvus, name, mv.IndexSpec(itype, metric, params), field=field)


@pytest.fixture
def stores(milvus_uri, tmp_path):
    milvus = mv.connect(milvus_uri)
    name = store.collection_name("store_test")
    if milvus.has_collection(name):
        milvus.drop_collection(name)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    yield milvus, qdrant, name
    qdrant.close()
    milvus.drop_collection(name)


def test_names_and_fingerprint():
    assert store.collection_name("minilm") == "lyrics_embeddings_minilm"
    assert store.slug_of("bge-m3") == "bge_m3"
    assert store.fingerprint("abc", "m/1") == "m/1:abc"
    assert store.part_path("minilm", "manual__2026-01-01T00:00:00+00:00", 3) == \
        "embeddings/minilm/run=manual__2026-01-01T00_00_00_00_00/part-00003.parquet"
    assert store.clip("é" * 10, 5) == "éé"  # cut on a character boundary, in bytes


def test_delta_round_trip_and_registry(tmp_path, mongo_db):
    root = UPath(tmp_path / "lake")
    table = make_table(6, 8)
    rel = store.part_path("store_test", "run1", 0)
    rec = store.write_delta(root, mongo_db, rel, table, "run1")
    doc = mongo_db["lake_partitions"].find_one({"_id": rel})
    assert (doc["dataset"], doc["date"], doc["producer"], doc["rows"]) == ("embeddings/store_test", None,
                                                                          "lyrics_embeddings", 6)
    assert doc["sha256"] == rec.sha256 and doc["bytes"] == (tmp_path / "lake" / rel).stat().st_size
    back = store.read_delta(root, rel)
    assert back.schema == store.DELTA_SCHEMA(8)
    assert np.allclose(store.dense_matrix(back), store.dense_matrix(table))
    assert store.sparse_dicts(back)[2] == {2: 0.5, 1002: 0.25}
    some = store.read_delta(root, rel, ids=["t4", "t1", "nope"])
    assert sorted(some.column("track_id").to_pylist()) == ["t1", "t4"]


def test_upserts_mirror_and_deletes(stores):
    milvus, qdrant, name = stores
    table = make_table(10, 8)
    assert store.upsert_milvus(milvus, name, table) == 10
    assert store.upsert_qdrant(qdrant, name, table) == 10
    assert store.upsert_qdrant(qdrant, name, table) == 0  # unchanged points are not rewritten
    store.upsert_milvus(milvus, name, table)  # idempotent by primary key
    build_indexes(milvus, name)
    m, q = store.milvus_fingerprints(milvus, name), store.qdrant_fingerprints(qdrant, name)
    assert m == q and len(m) == 10 and m["t3"] == store.fingerprint(f"{3:064x}", "test/model")
    # BM25 over the text field finds the non-Latin lyric
    hits = milvus.search(name, data=["привет"], anns_field=store.BM25_FIELD, limit=3,
                         search_params={"metric_type": "BM25"}, output_fields=["track_id"])
    assert {h["track_id"] for h in hits[0]} <= {"t0", "t2", "t4", "t6", "t8"} and hits[0]
    assert store.delete_ids(milvus, qdrant, name, ["t1", "t2", "absent"]) == {"milvus": 3, "qdrant": 3}
    m, q = store.milvus_fingerprints(milvus, name), store.qdrant_fingerprints(qdrant, name)
    assert m == q and set(m) == {f"t{i}" for i in range(10)} - {"t1", "t2"}


def test_refusals_write_nothing(stores):
    milvus, qdrant, name = stores
    store.upsert_milvus(milvus, name, make_table(4, 8))
    store.upsert_qdrant(qdrant, name, make_table(4, 8))
    with pytest.raises(DimensionMismatch):
        store.upsert_milvus(milvus, name, make_table(3, 16, prefix="x"))
    with pytest.raises(DimensionMismatch):
        store.upsert_qdrant(qdrant, name, make_table(3, 16, prefix="x"))
    with pytest.raises(DimensionMismatch):  # the collection has lexical weights, the delta none
        store.upsert_milvus(milvus, name, make_table(3, 8, sparse=False, prefix="x"))
    bad = make_table(3, 8, prefix="x")
    mat = store.dense_matrix(bad)
    mat[2, 0] = np.nan
    rows = [dict(zip(["track_id", "text", "title", "artist", "lyrics_sha256", "model_id"], r, strict=True))
            for r in zip(*(bad.column(c).to_pylist() for c in
                           ("track_id", "text", "title", "artist", "lyrics_sha256", "model_id")), strict=True)]
    nan_table = store.delta_table(rows, mat, store.sparse_dicts(bad), 8)
    with pytest.raises(VectorStoreError, match="NaN"):
        store.upsert_milvus(milvus, name, nan_table)
    with pytest.raises(VectorStoreError, match="NaN"):
        store.upsert_qdrant(qdrant, name, nan_table)
    assert set(store.qdrant_fingerprints(qdrant, name)) == {"t0", "t1", "t2", "t3"}
    build_indexes(milvus, name)
    assert set(store.milvus_fingerprints(milvus, name)) == {"t0", "t1", "t2", "t3"}
