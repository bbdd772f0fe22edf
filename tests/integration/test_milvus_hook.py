"""MilvusHook against the milvus-lite server: connection fields, test_connection, the blue/green helpers."""

from __future__ import annotations

import json

import pytest

from musicrec.vectors import milvus as mv
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_hook_connects_and_swaps_versioned_collections(milvus_uri, monkeypatch):
    from musicrec_airflow.hooks.milvus import MilvusHook

    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_HOOKTEST", json.dumps({"conn_type": "milvus",
                                                                   "extra": {"uri": milvus_uri}}))
    hook = MilvusHook("milvus_hooktest")
    assert hook.conn is hook.conn  # cached client
    ok, message = hook.test_connection()
    assert ok, message
    for version in ("1", "2", "3"):
        mv.ensure_collection(hook.conn, f"hooktest_v{version}", dim=4)
    try:
        assert hook.versions("hooktest") == ["hooktest_v1", "hooktest_v2", "hooktest_v3"]
        assert hook.swap_alias("hooktest", "hooktest_v1") is None
        assert hook.swap_alias("hooktest", "hooktest_v3") == "hooktest_v1"
        assert hook.alias_target("hooktest") == "hooktest_v3"
        # keep names the previous version; the alias' target is never dropped
        assert hook.drop_versions("hooktest", keep=["hooktest_v2"]) == ["hooktest_v1"]
        assert hook.versions("hooktest") == ["hooktest_v2", "hooktest_v3"]
        with pytest.raises(mv.DimensionMismatch):
            mv.ensure_collection(hook.conn, "hooktest_v2", dim=8)
    finally:
        hook.conn.drop_alias("hooktest")
        for name in hook.versions("hooktest"):
            hook.conn.drop_collection(name)


def test_hook_reads_host_port_token_and_reports_a_refused_server(monkeypatch):
    from musicrec_airflow.hooks.milvus import MilvusHook

    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_DOWN", json.dumps({"conn_type": "milvus", "host": "127.0.0.1",
                                                               "port": port, "password": "root:x",
                                                               "schema": "musicrec"}))
    hook = MilvusHook("milvus_down")
    assert hook.client_kwargs() == {"uri": f"http://127.0.0.1:{port}", "token": "root:x", "db_name": "musicrec"}
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_DOWN", json.dumps({"conn_type": "milvus", "host": "127.0.0.1",
                                                               "port": port, "extra": {"timeout": 2}}))
    ok, message = MilvusHook("milvus_down").test_connection()
    assert not ok and message


def test_a_pooled_client_survives_an_idle_spell(milvus_uri, monkeypatch):
    """milvus-lite's server allows no keepalive pings on an idle connection: with pymilvus' default
    (a ping every 10 s) it sends GOAWAY "too_many_pings", and the first call after ~100 s idle failed
    with "Fail connecting to server" (seen in CI). ``mv.connect`` pings only during calls."""
    import time

    from musicrec_airflow.hooks.milvus import MilvusHook

    # a token of its own: a pooled connection no other test shares (the pool key is address|token)
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_IDLE", json.dumps({"conn_type": "milvus", "password": "idle-test",
                                                               "extra": {"uri": milvus_uri, "timeout": 5}}))
    MilvusHook("milvus_idle").get_conn().list_collections()
    time.sleep(100)
    assert isinstance(MilvusHook("milvus_idle").get_conn().list_collections(), list)
