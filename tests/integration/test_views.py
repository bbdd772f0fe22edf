"""``musicrec.views`` (issue 17) over data the test puts in Mongo (SecantusDB) and a local lake."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from upath import UPath

from musicrec import views
from musicrec.als.params import collection_name
from tests import ui_data

pytestmark = pytest.mark.integration


@pytest.fixture
def memory():
    ui_data.register_memory()
    yield ui_data.memory_store_of("views")
    ui_data.unregister_memory()


def test_models_states_chart_and_embeddings(mongo_db, tmp_path, memory):
    lake = tmp_path / "lake"
    root = UPath(lake)
    ui_data.publish_two(mongo_db, root, lake, memory)
    ui_data.embedding_model(mongo_db)
    memory.ensure_collection("lyrics_embeddings_tiny", 8)
    memory.swap_alias("lyrics_embeddings", "lyrics_embeddings_tiny")

    out = views.als_models(mongo_db, memory)
    assert out["active"] == ui_data.NEW and out["alias"]["target"] == collection_name(ui_data.NEW)
    states = {m["version"]: m["state"] for m in out["models"]}
    assert states == {ui_data.NEW: "active", ui_data.OLD: "retained"} and out["retained"] == [ui_data.OLD]
    new = out["models"][0]
    assert new["version"] == ui_data.NEW  # newest window first
    assert new["ndcg_at_10"] == {"als": 0.09, "popularity": 0.025}
    assert new["gate"]["passed"] is True and new["gate"]["reason"] == "passed"
    assert new["backend"] == "implicit-cpu" and new["seconds_per_iteration"] == 0.0123
    assert new["window"]["end"].startswith("2009-05-05") and new["inputs"] == 1
    assert new["previous_version"] == ui_data.OLD
    # the chart runs oldest first
    assert [(c["version"], c["als"], c["popularity"]) for c in out["chart"]] == [
        (ui_data.OLD, 0.08, 0.03), (ui_data.NEW, 0.09, 0.025)]
    emb = out["embeddings"]
    assert emb == [emb[0]] and emb[0]["model"] == "tiny-bge" and emb[0]["dim"] == 8
    assert emb[0]["vectors"] == 3 and emb[0]["store_rows"] == 0 and emb[0]["alias_active"] is True

    # without the store's listing the retained one is the active model's previous version
    assert {m["version"]: m["state"] for m in views.als_models(mongo_db)["models"]}[ui_data.OLD] == "retained"
    # its collection dropped, the version is retired
    memory.drop_collection(collection_name(ui_data.OLD))
    assert {m["version"]: m["state"] for m in views.als_models(mongo_db, memory)["models"]}[ui_data.OLD] == "retired"

    # one run's model: by the version the run's XCom names, else by the run id that trained it
    assert views.model_of_run(mongo_db, "whatever", memory, version=ui_data.OLD)["version"] == ui_data.OLD
    assert views.model_of_run(mongo_db, f"manual__{ui_data.NEW}", memory)["version"] == ui_data.NEW
    assert views.model_of_run(mongo_db, "manual__nothing") is None


def test_a_refused_candidate(mongo_db, tmp_path):
    ui_data.model(mongo_db, tmp_path, "20090601_cccccc", datetime(2009, 6, 1, tzinfo=UTC), (0.01, 0.03))
    mongo_db["models"].update_one({"_id": "20090601_cccccc"},
                                  {"$set": {"gate": {"passed": False, "reason": "ALS ndcg@10 0.01 < min_lift"}}})
    m = views.als_models(mongo_db)["models"][0]
    assert m["state"] == "refused" and m["gate"]["reason"].startswith("ALS ndcg@10")
    assert views.als_models(mongo_db)["active"] is None


def test_audits_list_trend_and_report(mongo_db, tmp_path):
    root = UPath(tmp_path / "lake")
    assert views.audits(root, mongo_db) == {"runs": [], "trend": [], "open": []}
    ui_data.audit_run(root, "scheduled__2026-12-01T00:00:00+00:00", findings=3,
                      generated_at="2026-12-01T01:00:00+00:00")
    ui_data.audit_run(root, "manual__2026-12-02T10:00:00+00:00", findings=0, generated_at="2026-12-02T10:01:00+00:00")
    (tmp_path / "lake" / "audit" / "broken").mkdir()
    (tmp_path / "lake" / "audit" / "broken" / "report.json").write_text("{not json")
    mongo_db["audit_state"].insert_many([
        {"_id": "a|x|1", "scope": "als_items", "store": "milvus:x", "kind": "missing", "first_seen": datetime(2026, 12, 1)},
        {"_id": "a|x|2", "scope": "als_items", "store": "milvus:x", "kind": "missing", "first_seen": datetime(2026, 12, 2)},
    ])
    out = views.audits(root, mongo_db)
    assert [r["run_id"] for r in out["runs"]] == ["manual__2026-12-02T10:00:00+00:00",
                                                  "scheduled__2026-12-01T00:00:00+00:00"]
    assert out["runs"][1]["findings"] == 3 and out["runs"][1]["verdict"] == "3 open findings"
    assert out["runs"][1]["per_kind"]["missing"] == 3 and out["runs"][0]["clean"] is True
    assert [t["findings"] for t in out["trend"]] == [3, 0]
    assert out["open"] == [{"scope": "als_items", "store": "milvus:x", "kind": "missing", "count": 2,
                            "first_seen": "2026-12-01T00:00:00+00:00"}]

    rep = views.audit_report(root, "scheduled__2026-12-01T00:00:00+00:00")
    assert rep["run_id"] == "scheduled__2026-12-01T00:00:00+00:00" and rep["summary"]["findings"] == 3
    assert views.audit_report(root, "manual__never") is None
    for bad in ("..", ".", ""):
        with pytest.raises(ValueError):
            views.audit_report(root, bad)
    # a traversal attempt stays inside audit/ (path-safe name) and finds nothing
    assert views.audit_report(root, "../../etc") is None


def test_lyrics_coverage_backlog_and_runs(mongo_db):
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    ui_data.lyrics_songs(mongo_db, now)
    chunks = [{"run_id": "r1", "provider": "dump", "songs": 100, "seconds": 2.0, "found": 70, "not_found": 30,
               "at": "2026-12-01T00:00:00+00:00"},
              {"run_id": "r1", "provider": "dump", "songs": 50, "seconds": 4.0, "found": 50,
               "at": "2026-12-01T00:00:01+00:00"},
              {"run_id": "r2", "provider": "api", "songs": 10, "seconds": 5.0, "error": 3, "found": 7,
               "at": "2026-12-02T00:00:00+00:00"}]
    out = views.lyrics(mongo_db, views.merge_runs(chunks), now=now)
    assert out["counts"] == {"found": 4, "not_found": 2, "instrumental": 1, "error": 3, "pending": 1}
    assert out["total"] == 11 and out["coverage"] == round(7 / 11, 4) and out["exhausted"] == 1
    assert [(b["track_id"], b["due"], b["exhausted"]) for b in out["backlog"]] == [
        ("err0", True, False), ("err1", False, False), ("err2", False, True)]
    assert out["backlog"][0]["next_attempt_at"] == "2026-12-03T11:55:00+00:00"
    assert [(r["run_id"], r["provider"], r["songs"], r["rate_per_s"]) for r in out["runs"]] == [
        ("r2", "api", 10, 2.0), ("r1", "dump", 150, 37.5)]
    assert {p["provider"]: p["songs"] for p in out["providers"]} == {"api": 7, "dump": 3}
    assert views.lyrics(mongo_db)["runs"] is None



def test_the_library_modules_import_no_airflow():
    """``musicrec.views`` and ``musicrec.als.rollback`` are library code: the serving API or a script uses them
    without Airflow installed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    include = Path(__file__).resolve().parents[2] / "include"
    code = ("import sys, musicrec.views, musicrec.als.rollback; "
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(include)))
    assert out.stdout.strip() == "[]", out.stdout
