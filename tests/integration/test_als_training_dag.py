"""als_training end to end through ``airflow dags test``: the weekly run for 2009-05-03 publishes, its
re-run leaves every store identical, the older week is trained but gated (the active model's window
ends later) and the alias stays."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import pytest
from pymongo import MongoClient
from qdrant_client import QdrantClient

from musicrec.als.params import ALIAS
from musicrec.vectors import milvus as mv
from tests.conftest import airflow_dags_test
from tests.integration.test_als_publish import clean_milvus, snapshot

pytestmark = pytest.mark.integration

CONF = {"factors": 16, "iterations": 8}


def test_als_training_dag_publishes_reruns_and_gates(small_lake, airflow_db, mongo_uri, milvus_uri, tmp_path):
    src, docs = small_lake
    lake = tmp_path / "lake"
    shutil.copytree(src, lake)
    qdrant_path = tmp_path / "qdrant"
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_als",
           "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps({"conn_type": "milvus", "extra": {"uri": milvus_uri}}),
           "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps({"conn_type": "qdrant", "extra": {"path": str(qdrant_path)}})}
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    with MongoClient(mongo_uri) as client:
        client.drop_database("it_als")
        db = client["it_als"]
        db["lake_partitions"].insert_many([dict(d) for d in docs])

        out = airflow_dags_test("als_training", CONF, env, logical_date="2009-05-03")
        for task in ("train", "gate", "milvus_upsert", "milvus_index", "qdrant_mirror", "publish_users",
                     "swap_alias", "activate"):
            assert f"task_id={task}" in out
        active = db["models"].find_one({"status": "active"})
        assert active["window"]["end"] == datetime(2009, 5, 3)
        assert mv.alias_target(milvus, ALIAS) == active["collection"]
        assert "ALS backend" in out  # the trainer logs which backend it chose and why

        def state():
            qdrant = QdrantClient(path=str(qdrant_path))  # local mode: one client at a time, closed after
            try:
                return snapshot(db, milvus, qdrant)
            finally:
                qdrant.close()

        first = state()
        airflow_dags_test("als_training", CONF, env, logical_date="2009-05-03")
        assert state() == first

        out = airflow_dags_test("als_training", CONF, env, logical_date="2009-04-26")
        older = db["models"].find_one({"window.end": datetime(2009, 4, 26)})
        assert older is not None and older["status"] == "candidate"
        assert older["gate"]["passed"] is False and "later window" in older["gate"]["reason"]
        assert mv.alias_target(milvus, ALIAS) == active["collection"]
        assert db["models"].find_one({"_id": active["_id"]})["status"] == "active"
        client.drop_database("it_als")
    clean_milvus(milvus)
