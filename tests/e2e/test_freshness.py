"""Freshness end to end (issue 18) on ``airflow standalone`` (scheduler + triggerer): a lyrics edit made
in Mongo becomes searchable, and posted listens change the user's home list, with nobody triggering
anything — the AssetWatchers' change streams schedule ``lyrics_embeddings`` and ``user_refresh``.
Self-contained (its own songs, its own ALS model): it does not depend on other e2e files' order.
Limits are generous; tight figures belong in ``bench/freshness.py``."""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.als import foldin, model, publish
from musicrec.als.params import ALIAS, AlsParams, collection_name
from musicrec.events import stream as cs
from musicrec.recommend import home, hybrid
from musicrec.serve import events
from musicrec.vectors import milvus as mv
from tests.conftest import import_sample_lake

pytestmark = pytest.mark.e2e

DB = "musicrec_e2e"  # the standalone's mongo_default database (tests/e2e/conftest.py)
ANCHOR = datetime(2009, 5, 10, tzinfo=UTC)  # after every sample day: this model is the newest
LIMIT_S = 300


def wait_for(what: str, check, timeout_s: float = LIMIT_S, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def watching(airflow_standalone, mongo_uri):
    """lyrics_embeddings and user_refresh unpaused, the DAG files parsed again (a watcher's trigger is
    only registered for an unpaused DAG, at parse time) and both change streams open in the triggerer."""
    af = airflow_standalone
    af.unpause("lyrics_embeddings", "user_refresh")
    af.airflow("dags", "reserialize")
    db = MongoClient(mongo_uri)[DB]
    for stream in ("songs_text", "listen_users"):
        wait_for(f"the triggerer to open the {stream} stream",
                 lambda s=stream: db[cs.STATE].find_one({"_id": s, "token": {"$ne": None}}))
    yield af, db
    # leave the standalone as found: idle and paused again (the fixture paused every DAG at creation),
    # so the next file's runs and CLI calls (a backfill writes the SQLite database) do not compete
    # with the change streams' runs
    af.settle("lyrics_embeddings", "user_refresh")
    af.pause("lyrics_embeddings", "user_refresh")
    db.client.close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_lyrics_edit_becomes_searchable(watching, milvus_uri):
    af, db = watching
    songs = [{"_id": f"fresh-{i}", "title": f"Fresh Song {i}", "artist": "Freshness Band", "plays_total": 1,
              "lyrics": {"status": "found", "plain": f"an ordinary verse number {i} about the sea",
                         "sha256": sha(f"an ordinary verse number {i} about the sea")}} for i in range(3)]
    db["songs"].delete_many({"_id": {"$in": [s["_id"] for s in songs]}})
    db["songs"].insert_many(songs)  # new songs with lyrics: the stream schedules their embedding
    milvus = mv.connect(milvus_uri)

    def found(text: str, track_id: str):
        """The song's indexed text holds the words and a hybrid search for them ranks it first (with
        a handful of songs any query returns them all: membership in the hits proves nothing)."""
        try:
            rows = milvus.query("lyrics_embeddings", filter=f'track_id == "{track_id}"', output_fields=["text"])
            res = hybrid.search(text, 5, milvus=milvus, db=db)
        except Exception:  # the collection or alias is not there yet
            return None
        return (bool(rows) and all(w in rows[0]["text"] for w in text.split())
                and bool(res.hits) and res.hits[0].track_id == track_id)

    wait_for("the new songs to be searchable", lambda: found("ordinary verse number 1", "fresh-1"))
    assert not found("quixotic zeppelins marmalade", "fresh-1")  # the check can fail
    started = time.monotonic()
    db["songs"].update_one({"_id": "fresh-1"}, {"$set": {"lyrics.plain": "quixotic zeppelins over marmalade"}})
    wait_for("the edited lyrics to be searchable", lambda: found("quixotic zeppelins marmalade", "fresh-1"))
    took = time.monotonic() - started
    doc = db["songs"].find_one({"_id": "fresh-1"})
    assert doc["lyrics"]["sha256"] == sha("quixotic zeppelins over marmalade")  # recomputed by the embed step
    wait_for("the stamp of the new lyrics", lambda: (db["songs"].find_one({"_id": "fresh-1"}).get("embedding") or {}
                                                     ).get("lyrics_sha256") == sha("quixotic zeppelins over marmalade"))
    runs = [r for r in af.runs("lyrics_embeddings") if r["run_type"] == "asset_triggered"]
    assert runs and all(r["state"] in ("success", "running", "queued") for r in runs), runs
    print(f"lyrics edit searchable after {took:.1f} s; {len(runs)} asset-triggered lyrics_embeddings runs")


@pytest.fixture(scope="module")
def active_model(watching, tiny_sample, mongo_uri, milvus_uri, tmp_path_factory):
    """An ALS model of the tiny sample trained with the library beside the standalone, its artifacts
    in the standalone's lake, published (Milvus alias, users' vectors) and active."""
    af, db = watching
    tmp = tmp_path_factory.mktemp("fresh-als")
    docs = import_sample_lake(tiny_sample.archive, tmp / "lake", mongo_uri, "fresh_e2e")
    with MongoClient(mongo_uri) as client:
        train_db = client["fresh_e2e_train"]
        client.drop_database(train_db.name)
        train_db["lake_partitions"].insert_many([dict(d) for d in docs])
        summary = model.train(UPath(tmp / "lake"), train_db, ANCHOR, AlsParams(factors=16, iterations=10),
                              backend="implicit-cpu", run_id="fresh-e2e")
        doc = train_db["models"].find_one({"_id": summary["version"]})
        client.drop_database(train_db.name)
    lake = af.data / "lake"
    rel = f"models/als/{summary['version']}"
    shutil.copytree(tmp / "lake" / rel, lake / rel, dirs_exist_ok=True)
    db["models"].replace_one({"_id": doc["_id"]}, doc, upsert=True)
    milvus = mv.connect(milvus_uri)
    before = publish.active_model(db)
    publish.gate(db, summary["version"], force=True)
    publish.publish(db, UPath(lake), summary, milvus, index=mv.IndexSpec("HNSW", "IP"))
    assert db["models"].find_one({"_id": doc["_id"]})["status"] == "active"
    items = list(foldin.item_factors(UPath(lake), db["models"].find_one({"_id": summary["version"]}))[0])
    yield summary["version"], milvus, items
    # This model went to Milvus only (the standalone's local Qdrant belongs to its tasks, one process at
    # a time), so a store audit would rightly flag the missing mirror. Take it out again: the stores are
    # left as the DAGs built them, for the other e2e files' audits.
    version = summary["version"]
    if before is not None:
        milvus.alter_alias(collection_name=before.get("collection") or collection_name(before["_id"]), alias=ALIAS)
        db["models"].update_one({"_id": before["_id"]}, {"$set": {"status": "active"}})
    elif mv.alias_target(milvus, ALIAS) == collection_name(version):
        milvus.drop_alias(ALIAS)
    milvus.drop_collection(collection_name(version))
    db["models"].delete_one({"_id": version})
    publish.prune_user_vectors(db, [version])
    shutil.rmtree(lake / rel, ignore_errors=True)


def test_posted_listens_change_home(watching, active_model):
    af, db = watching
    version, milvus, items = active_model
    field = f"latent_vectors.{version}"
    user = db["users"].find_one({field: {"$exists": True}}, sort=[("_id", 1)])["_id"]
    before = [r.track_id for r in home(user, 10, db=db, milvus=milvus, exclude=set())]
    played = set(before)
    track = next(t for t in reversed(items) if t not in played)
    ts = datetime.now(UTC) - timedelta(minutes=5)
    checked = [events.check({"user_id": user, "track_id": track, "ts": (ts + timedelta(seconds=i)).isoformat(),
                             "action": "complete"}) for i in range(20)]
    started = time.monotonic()
    assert events.store(db, [c.doc for c in checked]) == 20

    def changed():
        now = [r.track_id for r in home(user, 10, db=db, milvus=milvus, exclude=set())]
        return now if now != before else None

    after = wait_for("the user's home list to change", changed)
    took = time.monotonic() - started
    assert track in after or after != before
    runs = [r for r in af.runs("user_refresh") if r["run_type"] == "asset_triggered"]
    assert runs, "no asset-triggered user_refresh run"
    print(f"home changed after {took:.1f} s; {len(runs)} asset-triggered user_refresh runs")
