"""lyrics_enrichment through ``airflow dags test`` on the tiny catalog: the dump provider (from the
Variable, as ``make run`` does) settles every song as the truth says; a re-run plans nothing."""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.catalog import sync
from musicrec.lyrics import queue, sidecar
from tests.conftest import airflow_dags_test
from tests.integration.test_lyrics_dump import ANCHOR, check_against_truth, expected

pytestmark = pytest.mark.integration


def test_lyrics_enrichment_dag_with_the_dump(tiny_lake, tiny_sample, airflow_db, mongo_uri):
    lake, docs = tiny_lake
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
           "AIRFLOW_VAR_MUSICREC_LRCLIB_DUMP": str(tiny_sample.lrclib_dump),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_lyrics"}
    with MongoClient(mongo_uri) as client:
        client.drop_database("it_lyrics")
        db = client["it_lyrics"]
        db["lake_partitions"].insert_many([dict(d) for d in docs])
        sync.sync_catalog(UPath(lake), db, ANCHOR)

        out = airflow_dags_test("lyrics_enrichment", {"max_chunks": 2}, env)
        assert "task_id=fetch_dump" in out and "map_index=1" in out  # two mapped chunks
        assert "songs/s" in out  # progress lines in the task log
        # plan_dump built the lookup index before the mapped chunks opened the dump
        assert "dump ready" in out and sidecar.is_current(sidecar.path_for(tiny_sample.lrclib_dump),
                                                          sidecar.source_of(tiny_sample.lrclib_dump))
        check_against_truth(db, expected(tiny_sample))
        first = queue.status_counts(db)
        assert first["pending"] == 0

        out = airflow_dags_test("lyrics_enrichment", {"max_chunks": 2}, env)
        assert "no pending songs" in out
        assert queue.status_counts(db) == first
        client.drop_database("it_lyrics")
