"""QdrantLocalHook: local mode from the connection's ``path``, one shared client per path."""

import json

import pytest


@pytest.fixture
def local_conn(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_QDRANT_UNIT", json.dumps({"conn_type": "qdrant",
                                                               "extra": {"path": str(tmp_path / "qdrant")}}))
    yield "qdrant_unit"
    from musicrec_airflow.hooks.qdrant import QdrantLocalHook

    QdrantLocalHook.close_local_clients()


def test_local_mode_from_path(local_conn, tmp_path):
    from qdrant_client import models

    from musicrec_airflow.hooks.qdrant import QdrantLocalHook

    hook = QdrantLocalHook(conn_id=local_conn)
    client = hook.get_conn()
    assert client is QdrantLocalHook(conn_id=local_conn).get_conn()  # local mode locks its folder: one client
    client.create_collection("c", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    client.upsert("c", [models.PointStruct(id=1, vector=[1.0, 0.0], payload={"track_id": "t1"})])
    assert client.count("c").count == 1
    assert (tmp_path / "qdrant").is_dir()  # data lives at the connection's path
    ok, message = hook.test_connection()
    assert ok, message


def test_without_path_it_is_the_providers_server_hook(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_QDRANT_SERVER", json.dumps({"conn_type": "qdrant", "host": "127.0.0.1",
                                                                 "port": 1}))
    from musicrec_airflow.hooks.qdrant import QdrantLocalHook

    client = QdrantLocalHook(conn_id="qdrant_server").get_conn()
    assert "127.0.0.1" in str(client._client.rest_uri)
    ok, _ = QdrantLocalHook(conn_id="qdrant_server").test_connection()
    assert not ok  # nothing listens on port 1: a clear failure, not a hang
