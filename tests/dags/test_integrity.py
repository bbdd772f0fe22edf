"""DAG integrity: every DAG imports cleanly and without top-level I/O, is tagged, owned, retried, acyclic."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAG_IDS = {"listens_import", "listens_daily", "catalog_sync", "als_training", "lyrics_embeddings",
                    "lyrics_enrichment", "store_audit", "als_rollback", "user_refresh"}


@pytest.fixture(scope="module")
def dagbag(monkeypatch_module):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Parsing must not touch the network, Variables or Connections: make any attempt fail loudly."""
    mp = pytest.MonkeyPatch()

    def no_network(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection at parse time")

    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    mp.setenv("AIRFLOW_VAR_MUSICREC_LAKE_ROOT", "")  # a parse-time Variable.get would still not reach a store
    yield mp
    mp.undo()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED_DAG_IDS


def test_every_dag_is_tagged_owned_and_retried(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert "musicrec" in dag.tags
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_no_cycles(dagbag):
    for dag_id, dag in dagbag.dags.items():
        # topological_sort raises on a cycle; every task must appear exactly once
        order = dag.topological_sort()
        assert len(order) == len(dag.tasks), dag_id


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_do_no_top_level_work(path):
    """Module level holds imports, constants and the DAG wiring only: no Variable/Connection/hook calls."""
    tree = ast.parse(path.read_text())
    forbidden = {"Variable", "get_connection", "BaseHook", "MongoClient", "open", "requests", "httpx"}

    def module_level(node: ast.AST):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue  # bodies run at task time, not at parse time
            yield child
            yield from module_level(child)

    for sub in module_level(tree):
        if isinstance(sub, ast.Call):
            name = getattr(sub.func, "id", None) or getattr(sub.func, "attr", None)
            root = sub.func
            while isinstance(root, ast.Attribute):
                root = root.value
            assert name not in forbidden and getattr(root, "id", None) not in forbidden, (
                f"{path.name}:{sub.lineno} calls {name} at module level")


def test_als_training_pools_and_queues(dagbag):
    """The GPU step takes the ``gpu`` pool; every task that opens the local Qdrant takes ``qdrant_local``."""
    dag = dagbag.dags["als_training"]
    assert dag.max_active_runs == 1
    assert dag.get_task("train").pool == "gpu"
    for task_id in ("qdrant_mirror", "swap_alias", "activate"):
        assert dag.get_task(task_id).pool == "qdrant_local", task_id
    assert dag.get_task("activate").upstream_task_ids == {"swap_alias"}
    # the Sunday race: training waits for day W-1's daily partition, freeing its slot between pokes
    wait = dag.get_task("wait_for_listens")
    assert wait.mode == "reschedule" and dag.get_task("train").upstream_task_ids == {"wait_for_listens"}
    assert dag.params["wait_timeout_hours"] == 6.0


def test_lyrics_embeddings_wiring(dagbag):
    """Asset-triggered on mongo_lyrics, emits milvus_lyrics_embeddings; encoding in pool gpu on the GPU
    queue; every task that opens the local Qdrant in qdrant_local; prune only after the stamp."""
    from musicrec import settings

    dag = dagbag.dags["lyrics_embeddings"]
    assert dag.max_active_runs == 1
    assert set(dag.params) >= {"model", "batch_size", "device"}
    assert "mongo_lyrics" in repr(getattr(dag.timetable, "asset_condition", dag.timetable))
    embed = dag.get_task("embed")
    assert (embed.pool, embed.queue) == ("gpu", settings.gpu_queue())
    for task_id in ("qdrant_mirror", "activate", "prune"):
        assert dag.get_task(task_id).pool == "qdrant_local", task_id
    assert [o.name for o in dag.get_task("prune").outlets] == ["milvus_lyrics_embeddings"]
    assert dag.get_task("prune").upstream_task_ids == {"stamp"}


def test_store_audit_schedule_pools_and_params(dagbag):
    """Daily on a data interval, not asset-triggered (its repairs must not re-trigger it), one run at a
    time, the tasks that open the local Qdrant in ``qdrant_local``."""
    dag = dagbag.dags["store_audit"]
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable" and dag.timetable.expression == "0 0 * * *"
    assert not getattr(dag.timetable, "asset_condition", None)
    for task_id in ("audit_als", "audit_lyrics"):
        assert dag.get_task(task_id).pool == "qdrant_local", task_id
    assert dag.get_task("check").upstream_task_ids == {"report"}
    assert {"mode", "grace_minutes", "scopes", "max_findings"} <= set(dag.params)
    assert dag.params["mode"] == "audit"  # today's default: find and record, change nothing


def test_store_audit_mode_param_refuses_the_old_booleans(dagbag):
    """One enum ``mode`` replaced ``repair`` + ``dry_run``: a conf that still sends either is refused
    when the run is created (the serialized DAG's params validation, as the API and the CLI do), not
    silently ignored; an unknown mode too."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    params = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["store_audit"])).params
    for mode in ("audit", "plan", "repair"):
        assert params.deep_merge({"mode": mode}).validate()["mode"] == mode
    for conf, hint in (({"repair": True}, '"mode": "repair"'), ({"dry_run": True}, '"mode": "plan"'),
                       ({"repair": True, "dry_run": True}, '"mode": "repair"'), ({"mode": "fix"}, "'plan'")):
        with pytest.raises(ParamValidationError, match=hint):
            params.deep_merge(conf).validate()


def test_als_rollback_is_manual_and_emits_the_music_collection(dagbag):
    dag = dagbag.dags["als_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual only
    assert dag.max_active_runs == 1 and set(dag.params) >= {"to_version"}
    (task,) = dag.tasks
    assert task.pool == "qdrant_local"  # the swap moves the Qdrant mirror's alias too
    assert [a.name for a in task.outlets] == ["milvus_music_collection"]


def test_change_stream_assets_schedule_the_freshness_dags(dagbag):
    """Issue 18: AssetWatchers on songs (text edits → lyrics_embeddings; inserts → lyrics_enrichment)
    and listen_events (→ user_refresh); each watcher runs a MongoChangeStreamTrigger (an event trigger)."""
    from airflow.triggers.base import BaseEventTrigger

    from musicrec_airflow import assets

    watched = {a.name: a.watchers[0].trigger for a in (assets.MONGO_SONGS_TEXT_CHANGES, assets.MONGO_SONGS_NEW,
                                                       assets.MONGO_LISTEN_EVENTS)}
    assert all(isinstance(t, BaseEventTrigger) for t in watched.values())
    assert watched["mongo_songs_text_changes"].fields == ["title", "artist", "lyrics.plain"]
    assert watched["mongo_songs_new"].operations == ["insert"]
    assert (watched["mongo_listen_events"].collection, watched["mongo_listen_events"].key) == ("listen_events",
                                                                                               "user_id")
    assert len({t.name for t in watched.values()}) == 3  # one resume token each

    def schedule(dag_id: str) -> str:
        tt = dagbag.dags[dag_id].timetable
        return repr(getattr(tt, "asset_condition", tt))

    assert "mongo_songs_text_changes" in schedule("lyrics_embeddings") and "mongo_lyrics" in schedule(
        "lyrics_embeddings")
    assert dagbag.dags["lyrics_embeddings"].get_task("embed").changes_stream == assets.SONGS_TEXT_STREAM
    assert "mongo_songs_new" in schedule("lyrics_enrichment") and "mongo_songs" in schedule("lyrics_enrichment")
    refresh = dagbag.dags["user_refresh"]
    assert "mongo_listen_events" in schedule("user_refresh") and refresh.max_active_runs == 1
    assert refresh.get_task("fold_in").changes_stream == assets.LISTEN_USERS_STREAM
