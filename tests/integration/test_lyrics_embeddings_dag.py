"""lyrics_embeddings through ``airflow dags test`` (the real CLI path) on the BGE-M3 code path with the
tiny random XLM-R; a second run embeds and writes nothing. And LyricsMilvusIndexOperator: what
it reports is what Milvus Lite really built; a type Lite accepts but never builds is refused."""

from __future__ import annotations

import json

import pytest
from pymongo import MongoClient
from qdrant_client import QdrantClient

from musicrec.embeddings import store
from musicrec.vectors import milvus as mv
from tests.conftest import airflow_dags_test
from tests.integration.test_als_publish import clean_milvus
from tests.integration.test_lyrics_embeddings import LYRICS, mongo_fingerprints, seed_songs

pytestmark = pytest.mark.integration


def test_lyrics_embeddings_dag_twice(tiny_bge_m3, airflow_db, mongo_uri, milvus_uri, tmp_path):
    qdrant_path = tmp_path / "qdrant"
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": (tmp_path / "lake").as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_emb",
           "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps({"conn_type": "milvus", "extra": {"uri": milvus_uri}}),
           "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps({"conn_type": "qdrant", "extra": {"path": str(qdrant_path)}})}
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    conf = {"model": f"bge-m3:{tiny_bge_m3}", "device": "cpu", "batch_size": 4}
    with MongoClient(mongo_uri) as client:
        client.drop_database("it_emb")
        db = client["it_emb"]
        seed_songs(db)
        out = airflow_dags_test("lyrics_embeddings", conf, env)
        assert "'embedded': 7" in out
        name = store.active_model(db)["collection"]
        assert mv.alias_target(milvus, store.ALIAS) == name
        qdrant = QdrantClient(path=str(qdrant_path))
        try:
            fps = store.milvus_fingerprints(milvus, name)
            assert fps == store.qdrant_fingerprints(qdrant, store.ALIAS) == mongo_fingerprints(db)
            assert set(fps) == set(LYRICS) - {"s08"}
        finally:
            qdrant.close()
        registry_before = sorted(d["_id"] for d in db["lake_partitions"].find())
        songs_before = sorted((d["_id"], str(d.get("embedding"))) for d in db["songs"].find())

        out = airflow_dags_test("lyrics_embeddings", conf, env)
        assert "'embedded': 0" in out
        assert sorted(d["_id"] for d in db["lake_partitions"].find()) == registry_before
        assert sorted((d["_id"], str(d.get("embedding"))) for d in db["songs"].find()) == songs_before
        assert store.milvus_fingerprints(milvus, name) == fps
        client.drop_database("it_emb")
    clean_milvus(milvus)


def test_index_operator_reports_what_was_built(milvus_uri, monkeypatch):
    from musicrec_airflow.operators.embeddings import LyricsMilvusIndexOperator

    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_DEFAULT", json.dumps({"conn_type": "milvus", "extra": {"uri": milvus_uri}}))
    milvus = mv.connect(milvus_uri)
    name = store.collection_name("index_op_test")
    if milvus.has_collection(name):
        milvus.drop_collection(name)
    from tests.integration.test_embeddings_store import make_table

    store.upsert_milvus(milvus, name, make_table(8, 8))
    try:
        refused = LyricsMilvusIndexOperator(task_id="idx", collection=name, index_type="IVF_PQ",
                                            index_params='{"nlist": 4, "m": 2}')
        with pytest.raises(mv.VectorStoreError, match="never builds"):
            refused.execute({})
        assert not milvus.list_indexes(name, field_name=store.DENSE)  # nothing half-built
        op = LyricsMilvusIndexOperator(task_id="idx", collection=name, index_type="HNSW",
                                       index_params='{"M": 16, "efConstruction": 200}')
        out = op.execute({})
        for field, (itype, metric, _params) in store.INDEXES.items():
            desc = milvus.describe_index(name, index_name=milvus.list_indexes(name, field_name=field)[0])
            assert (out["fields"][field]["index_type"], out["fields"][field]["metric_type"]) == \
                (desc["index_type"], desc["metric_type"]) == (itype, metric)
            assert desc["indexed_rows"] == 8
        assert "Loaded" in str(milvus.get_load_state(name)["state"])
        assert op.execute({}) == out  # a matching index is kept
    finally:
        milvus.drop_collection(name)
