"""catalog_sync end to end through ``airflow dags test`` on the tiny lake: a manual run anchors at the
newest partition, a dated run at its data interval's end; re-runs leave MongoDB identical."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.catalog import sync
from tests.conftest import airflow_dags_test

pytestmark = pytest.mark.integration


def _dump(db) -> dict[str, list[dict]]:
    return {c: sorted(db[c].find(), key=lambda d: d["_id"]) for c in ("songs", "users")}


def test_catalog_sync_manual_and_dated_runs(tiny_lake, airflow_db, mongo_uri, tmp_root):
    src, docs = tiny_lake
    lake = tmp_root / "lake-catalog-it"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(src, lake)
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_catalog"}
    with MongoClient(mongo_uri) as client:
        client.drop_database("it_catalog")
        db = client["it_catalog"]
        db["lake_partitions"].insert_many([dict(d) for d in docs])

        airflow_dags_test("catalog_sync", {}, env)
        first = _dump(db)
        assert len(first["songs"]) > 200 and len(first["users"]) == 20
        # the same figures as the library for the newest partition's end (2009-05-05)
        ref = client["it_catalog_ref"]
        client.drop_database(ref.name)
        ref["lake_partitions"].insert_many([dict(d) for d in docs])
        sync.sync_catalog(UPath(lake), ref, datetime(2009, 5, 5, tzinfo=UTC))
        strip = {"updated_at"}
        diffs = [(a["_id"], k, a.get(k), b.get(k)) for a, b in zip(_dump(ref)["songs"], first["songs"], strict=True)
                 for k in set(a) | set(b) if k not in strip and a.get(k) != b.get(k)]
        assert not diffs, diffs[:5]
        client.drop_database(ref.name)

        airflow_dags_test("catalog_sync", {}, env)
        assert _dump(db) == first  # nothing rewritten

        # a dated run (the daily schedule): `dags test catalog_sync 2009-04-20` owns [04-19, 04-20)
        out = airflow_dags_test("catalog_sync", {"force": True}, env, logical_date="2009-04-20")
        assert "2009-04-20 00:00:00+00:00" in out
        songs = {d["_id"]: d for d in db["songs"].find()}
        assert {d["catalog_as_of"] for d in songs.values()} == {datetime(2009, 4, 20)}
        assert sum(d["plays_total"] for d in songs.values()) < sum(d["plays_total"] for d in first["songs"])
        client.drop_database("it_catalog")
