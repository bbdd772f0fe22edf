"""The client factory (``musicrec.stores``) and the store registry (``musicrec.vectors``) without servers:
Qdrant in local mode, Mongo clients that never connect."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from musicrec import stores, vectors
from musicrec.als.model import factors_table
from musicrec.vectors import qdrant as qd


@pytest.fixture
def qdrant_settings(tmp_path):
    yield stores.VectorStoreSettings("qdrant", path=str(tmp_path / "qdrant"))
    qd.close_local_clients()


def test_settings_build_each_part(tmp_path, qdrant_settings):
    opened = stores.open_stores(stores.StoreSettings(mongo_uri="mongodb://127.0.0.1:1/", mongo_db="x",
                                                     lake_root=str(tmp_path / "lake") + "/",
                                                     vectors=(qdrant_settings,)), connect=False)
    try:
        assert opened.db.name == "x" and str(opened.root) == str(tmp_path / "lake")
        [store] = opened.vectors
        assert store.kind == "qdrant" and isinstance(store, vectors.VectorStore)
        # local mode locks its folder: one client per path and process
        assert stores.vector_store(qdrant_settings).client is store.client
    finally:
        opened.close()


def test_mongo_database_names():
    assert stores.mongo_database("mongodb://127.0.0.1:1/other", connect=False).name == "other"
    assert stores.mongo_database("mongodb://127.0.0.1:1/", connect=False).name == stores.DEFAULT_DB
    client = stores.mongo_client("mongodb://127.0.0.1:1/", connect=False)
    assert stores.mongo_database(client, "given").name == "given"
    client.close()


def test_registry_wraps_clients_and_refuses_unknown_kinds(qdrant_settings):
    store = stores.vector_store(qdrant_settings)
    wrapped = vectors.as_stores(None, [store.client, None], store)
    assert [s.kind for s in wrapped] == ["qdrant", "qdrant"] and wrapped[1] is store
    assert wrapped[0].client is store.client
    with pytest.raises(ValueError, match="unknown vector store kind"):
        stores.vector_store(stores.VectorStoreSettings("nosuch"))
    with pytest.raises(TypeError):
        vectors.as_store(object())


def test_qdrant_store_round_trip(tmp_path, qdrant_settings):
    """The protocol's data part on one store: a factors file in, rows out, a diff re-run, deletes."""
    store = stores.vector_store(qdrant_settings)
    ids = np.array([f"t{i}" for i in range(5)], dtype=object)
    vecs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # inner product: each vector is its own nearest
    pq.write_table(factors_table(ids, vecs, "track_id"), tmp_path / "f.parquet")
    out = store.upsert_parquet("c_v1", tmp_path / "f.parquet", payload={"model_version": "1"})
    assert out["rows"] == 5 and out["written"] == 5 and store.collection_dim("c_v1") == 4
    assert store.upsert_parquet("c_v1", tmp_path / "f.parquet", payload={"model_version": "1"})["written"] == 0
    got = {r.key: (r.payload["model_version"], r.vector) for r in store.scan("c_v1", vectors=True)}
    assert set(got) == set(ids) and np.allclose(got["t3"][1], vecs[3])
    assert [r.key for r in store.fetch("c_v1", ["t1", "absent"])] == ["t1"]
    assert store.search("c_v1", vecs[2].tolist(), 1)[0][0] == "t2"
    assert store.delete("c_v1", ["t0", "absent"]) == 2 and store.count("c_v1") == 4
    assert store.swap_alias("c", "c_v1") is None and store.alias_target("c") == "c_v1"
    assert store.versions("c") == ["c_v1"] and not vectors.has(store, vectors.Capability.INDEX)
