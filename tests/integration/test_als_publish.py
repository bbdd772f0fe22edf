"""ALS train → gate → blue/green publish against the embedded engines (SecantusDB, milvus-lite server,
Qdrant local mode) on the ``small`` lake, through the library the DAG's operators call."""

from __future__ import annotations

import contextlib
import shutil
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest
from pymilvus import MilvusClient
from qdrant_client import QdrantClient
from upath import UPath

from musicrec import recommend, registry
from musicrec.als import model, publish
from musicrec.als.params import ALIAS, AlsParams, collection_name
from musicrec.catalog import sync
from musicrec.lake import storage
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd

pytestmark = pytest.mark.integration

WEEK1 = datetime(2009, 4, 26, tzinfo=UTC)  # Sundays: the weekly schedule's data-interval ends
WEEK2 = datetime(2009, 5, 3, tzinfo=UTC)
PARAMS = AlsParams(factors=32, iterations=10)


def clean_milvus(client: MilvusClient) -> None:
    for alias in client.list_aliases().get("aliases") or []:
        client.drop_alias(alias)
    for name in client.list_collections():
        client.drop_collection(name)


@pytest.fixture
def stores(small_lake, mongo_db, milvus_uri, tmp_path):
    src, docs = small_lake
    lake = tmp_path / "lake"
    shutil.copytree(src, lake)
    mongo_db["lake_partitions"].insert_many([dict(d) for d in docs])
    root = UPath(lake)
    sync.sync_catalog(root, mongo_db, WEEK2)
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    yield root, mongo_db, milvus, qdrant
    qdrant.close()
    clean_milvus(milvus)


def snapshot(db, milvus: MilvusClient, qdrant: QdrantClient) -> dict:
    """Everything the publish owns, minus wall-clock stamps."""
    def strip(doc):
        return {k: v for k, v in doc.items() if not k.endswith("_at") and k != "run_id"}

    out = {
        "models": sorted((strip(d) for d in db["models"].find()), key=lambda d: d["_id"]),
        "users": sorted((d["_id"], d.get("latent_vectors"), d.get("played_tracks")) for d in db["users"].find()),
        "registry": sorted((d["_id"], d["sha256"]) for d in db["lake_partitions"].find({"_id": {"$regex": "^models/"}})),
        "milvus_alias": mv.alias_target(milvus, ALIAS),
        "milvus": {},
        "qdrant_alias": qd.alias_target(qdrant, ALIAS),
        "qdrant": {},
    }
    for name in mv.versions(milvus, ALIAS):
        rows = milvus.query(name, filter="", output_fields=[mv.ID_FIELD, mv.VECTOR_FIELD], limit=16384)
        out["milvus"][name] = sorted((r[mv.ID_FIELD], tuple(np.round(r[mv.VECTOR_FIELD], 5))) for r in rows)
    for name in qd.versions(qdrant, ALIAS):
        out["qdrant"][name] = sorted((str(p.id), p.payload["track_id"], tuple(np.round(p.vector, 5)))
                                     for p in qd.iter_points(qdrant, name, with_vectors=True))
    return out


def window_played(root, db, version: str) -> dict[str, list[str]]:
    """What each user played in the model's window, straight from the lake (the test's own query)."""
    from musicrec.lake import reader

    doc = db["models"].find_one({"_id": version})
    con, _ = reader.open_span(root, db, reader.utc(doc["window"]["start"]), reader.utc(doc["window"]["end"]))
    out: dict[str, set[str]] = {}
    for uid, tid in con.execute("SELECT user_id, track_id FROM events").fetchall():
        out.setdefault(uid, set()).add(tid)
    con.close()
    return {u: sorted(t) for u, t in out.items()}


@contextlib.contextmanager
def no_lake_reads():
    """Any lake scan inside fails the test."""
    from unittest import mock

    from musicrec.lake import reader

    def refuse(*_a, **_k):
        raise AssertionError("the lake was read")

    with mock.patch.object(reader, "open_span", refuse), mock.patch.object(reader, "connect", refuse):
        yield


def train_and_publish(root, db, milvus, qdrant, anchor, params=PARAMS, **gate_kwargs):
    summary = model.train(root, db, anchor, params, backend="auto", run_id="test")
    publish.gate(db, summary["version"], **gate_kwargs)
    return summary, publish.publish(db, root, summary, milvus, qdrant, index=mv.IndexSpec("HNSW", "IP"))


def test_publish_serves_the_model_and_a_rerun_changes_nothing(stores):
    root, db, milvus, qdrant = stores
    summary, out = train_and_publish(root, db, milvus, qdrant, WEEK2)
    version = summary["version"]
    assert version == model.plan(db, WEEK2, PARAMS)["version"] and summary["reused"] is False
    assert version.startswith("20090503_")
    metrics = summary["metrics"]
    # the sample's planted tastes are learnable: ALS at least doubles popularity's ndcg@10
    assert metrics["als"]["ndcg_at_10"] >= 2 * metrics["popularity"]["ndcg_at_10"], metrics

    doc = db["models"].find_one({"_id": version})
    assert doc["status"] == "active" and doc["kind"] == "als"
    assert doc["window"] == {"start": datetime(2009, 2, 2), "end": datetime(2009, 5, 3)}
    assert doc["inputs"] and all(i["path"].startswith("listens/date=2009-0") and len(i["sha256"]) == 64
                                 for i in doc["inputs"])
    arts = {a["kind"]: a for a in doc["artifacts"]}
    assert set(arts) == {"user_factors", "item_factors", "metrics"}
    items = pq.read_table(root / arts["item_factors"]["path"])
    users = pq.read_table(root / arts["user_factors"]["path"])

    name = collection_name(version)
    assert mv.alias_target(milvus, ALIAS) == name and qd.alias_target(qdrant, ALIAS) == name
    assert mv.versions(milvus, ALIAS) == [name] and qd.versions(qdrant, ALIAS) == [name]
    assert mv.count(milvus, name) == items.num_rows == out["milvus"]["rows"]
    assert qdrant.count(name).count == items.num_rows
    assert out["milvus"]["index"]["index_type"] == "HNSW" and out["milvus"]["recall"] >= 0.8
    with_vec = db["users"].count_documents({f"latent_vectors.{version}": {"$exists": True}})
    assert with_vec == users.num_rows

    # a Milvus restart leaves every collection released: serving and a re-run load it again
    milvus.release_collection(name)
    assert len(recommend.home(users.column("user_id")[0].as_py(), 3, db=db, milvus=milvus, exclude=[])) == 3
    before = snapshot(db, milvus, qdrant)
    milvus.release_collection(name)
    again, out2 = train_and_publish(root, db, milvus, qdrant, WEEK2)
    assert again["reused"] is True and out2["users"]["written"] == 0 and out2["users"]["played_written"] == 0
    assert snapshot(db, milvus, qdrant) == before

    # played tracks: stored per version for every model user, equal to the window's events in the lake
    expected = window_played(root, db, version)
    stored = {d["_id"]: d["played_tracks"][version] for d in db["users"].find(
        {f"latent_vectors.{version}": {"$exists": True}}, {f"played_tracks.{version}": 1})}
    assert set(stored) == set(users.column("user_id").to_pylist())
    assert stored == {u: expected.get(u, []) for u in stored} and sum(map(len, stored.values())) > 100

    # recommendations: the user's vector, their played tracks excluded (read from the store, not the
    # lake: a lake scan here would fail), titles from the catalog
    uid = max(stored, key=lambda u: len(stored[u]))
    played = set(stored[uid])
    with no_lake_reads():
        recs = recommend.home(uid, 10, db=db, milvus=milvus)
        assert recommend.played_tracks(db, uid, version) == played
        unfiltered = recommend.home(uid, 10 + len(played), db=db, milvus=milvus, exclude=[])
        current = sorted(played)[0]
        nxt = recommend.next_song(uid, current, 5, db=db, milvus=milvus)
    assert len(recs) == 10 and not {r.track_id for r in recs} & played
    assert {r.track_id for r in unfiltered} & played  # the exclusion has something to exclude
    assert [r for r in unfiltered if r.track_id not in played][:10] == recs
    assert all(r.title for r in recs) and recs == sorted(recs, key=lambda r: -r.score)
    assert len(nxt) == 5 and not {r.track_id for r in nxt} & played
    with pytest.raises(recommend.NoRecommendations):
        recommend.home("nobody", db=db, milvus=milvus)


def test_backfill_crash_before_the_swap_then_rerun(stores):
    """Two weekly dates: the second model's publish dies after its collection is built; the first model
    keeps serving; the re-run completes the publish without duplicates."""
    root, db, milvus, qdrant = stores
    first, _ = train_and_publish(root, db, milvus, qdrant, WEEK1)
    second = model.train(root, db, WEEK2, PARAMS, run_id="test")
    assert first["version"] != second["version"]
    assert first["window"]["end"].startswith("2009-04-26") and second["window"]["end"].startswith("2009-05-03")
    publish.gate(db, second["version"])
    publish.publish_milvus(milvus, root, second["version"], second["item_factors"])
    publish.publish_qdrant(qdrant, root, second["version"], second["item_factors"])
    publish.publish_users(db, root, second["version"], second["user_factors"])
    # -- killed here: the alias still serves the first model, the second is a candidate
    old, new = collection_name(first["version"]), collection_name(second["version"])
    assert mv.alias_target(milvus, ALIAS) == old and qd.alias_target(qdrant, ALIAS) == old
    assert db["models"].find_one({"_id": first["version"]})["status"] == "active"
    assert db["models"].find_one({"_id": second["version"]})["status"] == "candidate"
    uid = db["users"].find_one({f"latent_vectors.{second['version']}": {"$exists": True},
                                f"latent_vectors.{first['version']}": {"$exists": True}})["_id"]
    # a reader takes the model from the alias and that model's user vector, never the other space
    assert recommend.serving_model(milvus) == (first["version"], old)
    assert len(recommend.home(uid, 5, db=db, milvus=milvus, exclude=[])) == 5

    train_and_publish(root, db, milvus, qdrant, WEEK2)  # the re-run
    assert mv.alias_target(milvus, ALIAS) == new and qd.alias_target(qdrant, ALIAS) == new
    assert mv.versions(milvus, ALIAS) == sorted([old, new])  # the previous version is kept for roll-back
    assert mv.count(milvus, new) == pq.read_table(root / second["item_factors"]).num_rows
    statuses = {d["_id"]: d["status"] for d in db["models"].find()}
    assert statuses == {first["version"]: "retired", second["version"]: "active"}
    assert db["models"].find_one({"_id": second["version"]})["previous_version"] == first["version"]

    # out of order: re-publishing the older week never moves the alias back (unless forced)
    with pytest.raises(publish.GateRefused, match="later window"):
        publish.gate(db, first["version"])
    assert publish.gate(db, first["version"], force=True)["reason"] == "passed"


def test_gate_refuses_a_deliberately_worse_model(stores):
    root, db, milvus, qdrant = stores
    good, _ = train_and_publish(root, db, milvus, qdrant, WEEK2)
    before = snapshot(db, milvus, qdrant)
    worse = model.train(root, db, WEEK2, AlsParams(factors=2, iterations=1, regularization=500.0), run_id="t")
    assert worse["metrics"]["als"]["ndcg_at_10"] < good["metrics"]["als"]["ndcg_at_10"] - 0.02
    with pytest.raises(publish.GateRefused, match="ndcg@10"):
        publish.gate(db, worse["version"])
    after = snapshot(db, milvus, qdrant)
    assert after["milvus"] == before["milvus"] and after["users"] == before["users"]
    assert after["milvus_alias"] == collection_name(good["version"])
    assert db["models"].find_one({"_id": worse["version"]})["status"] == "candidate"
    # an impossible lift refuses even the good model
    with pytest.raises(publish.GateRefused, match="min_lift"):
        publish.gate(db, worse["version"], min_lift=1000.0)


def test_bad_vectors_and_dimensions_are_refused(stores, tmp_path):
    root, db, milvus, qdrant = stores
    good = model.factors_table(np.array(["a", "b"], dtype=object), np.ones((2, 4), np.float32), "track_id")
    path = tmp_path / "v.parquet"
    pq.write_table(good, path)
    mv.upsert_parquet(milvus, "music_collection_vdim", path)
    wider = model.factors_table(np.array(["a"], dtype=object), np.ones((1, 8), np.float32), "track_id")
    pq.write_table(wider, tmp_path / "w.parquet")
    with pytest.raises(mv.DimensionMismatch, match="dim 4"):
        mv.upsert_parquet(milvus, "music_collection_vdim", tmp_path / "w.parquet")
    nan = model.factors_table(np.array(["a"], dtype=object), np.full((1, 4), np.nan, np.float32), "track_id")
    pq.write_table(nan, tmp_path / "n.parquet")
    with pytest.raises(mv.VectorStoreError, match="NaN"):
        mv.upsert_parquet(milvus, "music_collection_vdim", tmp_path / "n.parquet")
    with pytest.raises(mv.VectorStoreError, match="NaN"):
        qd.upsert_parquet(qdrant, "music_collection_vdim", tmp_path / "n.parquet")
    assert mv.count(milvus, "music_collection_vdim") == 2
    with pytest.raises(mv.VectorStoreError, match="never builds"):
        mv.ensure_index(milvus, "music_collection_vdim", mv.IndexSpec("IVF_PQ", "IP"))


def test_empty_window_is_a_clear_error(stores):
    root, db, _, _ = stores
    from musicrec.als.matrix import EmptyWindow

    with pytest.raises(EmptyWindow, match="no listens partitions"):
        model.train(root, db, datetime(2001, 1, 7, tzinfo=UTC), PARAMS)


def add_late_partition(root, db, day: str = "2009-05-01", rows: int = 200) -> str:
    """A ``daily`` file landing late beside the import file of ``day`` (inside the window): events of
    the same users, one second later, ``complete`` — new rows, so the registry gets a new sha256."""
    src = db["lake_partitions"].find_one({"_id": {"$regex": f"^listens/date={day}/"}})
    table = pq.read_table(root / src["_id"]).slice(0, rows)
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = pc.add(table.column("ts"), pa.scalar(1000, pa.duration("ms")))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", ts.cast(table.schema.field("ts").type))
    table = table.set_column(table.schema.get_field_index("action"), "action",
                             pa.array(["complete"] * table.num_rows, pa.string()))
    rel = f"listens/date={day}/daily.parquet"
    local = storage.local_path(root).parent / "late.parquet"
    pq.write_table(table, local)
    info = storage.publish_file(local, root / rel)
    registry.record(db, [registry.PartitionRecord(rel, src["dataset"], day, "daily", table.num_rows, info.bytes,
                                                  info.sha256, "late")])
    return rel


def lake_bytes(root, doc) -> dict[str, bytes]:
    return {a["path"]: (root / a["path"]).read_bytes() for a in doc["artifacts"]}


def test_late_partition_makes_a_new_version_that_the_gate_decides(stores):
    """A late partition inside the window is a new version; a high ``min_lift`` refuses it and the live
    model stays byte for byte; the default gate publishes it and keeps the old one for roll-back."""
    root, db, milvus, qdrant = stores
    first, _ = train_and_publish(root, db, milvus, qdrant, WEEK2)
    old_doc = db["models"].find_one({"_id": first["version"]})
    before, old_bytes = snapshot(db, milvus, qdrant), lake_bytes(root, old_doc)

    add_late_partition(root, db)
    late = model.train(root, db, WEEK2, PARAMS, run_id="late")
    assert late["version"] != first["version"] and late["version"].startswith("20090503_")
    assert late["reused"] is False
    # no bypass: the refusal is recorded with its numbers on the candidate only
    with pytest.raises(publish.GateRefused, match="min_lift") as refused:
        publish.gate(db, late["version"], min_lift=1000.0)
    assert publish.record_gate(db, refused.value.decision) is True
    gate_doc = db["models"].find_one({"_id": late["version"]})["gate"]
    assert gate_doc["passed"] is False and gate_doc["min_lift"] == 1000.0 and gate_doc["ndcg_at_10"] > 0
    assert gate_doc["active"] == first["version"]
    after = snapshot(db, milvus, qdrant)
    assert after["milvus"] == before["milvus"] and after["qdrant"] == before["qdrant"]
    assert after["users"] == before["users"] and after["milvus_alias"] == before["milvus_alias"]
    assert db["models"].find_one({"_id": first["version"]}) == old_doc
    assert lake_bytes(root, old_doc) == old_bytes

    # the same rule for the live version itself: min_lift 1000 refuses it too, and nothing is recorded on it
    with pytest.raises(publish.GateRefused, match="min_lift") as again:
        publish.gate(db, first["version"], min_lift=1000.0)
    assert publish.record_gate(db, again.value.decision) is False
    assert db["models"].find_one({"_id": first["version"]}) == old_doc

    # a re-run of the live version's training reuses it: nothing is rewritten
    assert model.train(root, db, WEEK2, PARAMS, run_id="rerun")["reused"] is True
    assert db["models"].find_one({"_id": first["version"]}) == old_doc

    # through the default gate the late version goes live; the old one is kept for roll-back
    train_and_publish(root, db, milvus, qdrant, WEEK2)
    assert mv.alias_target(milvus, ALIAS) == collection_name(late["version"])
    statuses = {d["_id"]: d["status"] for d in db["models"].find()}
    assert statuses == {first["version"]: "retired", late["version"]: "active"}
    assert collection_name(first["version"]) in mv.versions(milvus, ALIAS)
    assert lake_bytes(root, old_doc) == old_bytes

    # a published version's played tracks are fixed: a re-run fills a missing set, never changes one
    lv, field = late["version"], f"played_tracks.{late['version']}"
    a, b = (d["_id"] for d in db["users"].find({field: {"$ne": []}}, {"_id": 1}).sort("_id", 1).limit(2))
    want_a = db["users"].find_one({"_id": a})["played_tracks"][lv]
    db["users"].update_one({"_id": a}, {"$unset": {field: ""}})
    db["users"].update_one({"_id": b}, {"$set": {field: ["changed"]}})
    out = publish.publish_users(db, root, lv, late["user_factors"])
    assert out["written"] == 0 and out["played_written"] == 1
    assert db["users"].find_one({"_id": a})["played_tracks"][lv] == want_a
    assert db["users"].find_one({"_id": b})["played_tracks"][lv] == ["changed"]


def test_training_twice_on_the_same_inputs_gives_the_same_version(stores):
    """What ``make run`` twice does: the same lake and params name the same version (reused, not retrained)."""
    root, db, _, _ = stores
    a = model.train(root, db, WEEK1, PARAMS, run_id="one")
    db["models"].delete_many({})  # a fresh store: the name comes from the inputs alone
    b = model.train(root, db, WEEK1, PARAMS, run_id="two")
    assert a["version"] == b["version"] and b["reused"] is False
    assert model.train(root, db, WEEK1, PARAMS, run_id="three")["reused"] is True


READERS = 6


def read_all(db, milvus, users: list[str], tracks: list[str]) -> dict:
    """home() and next_song() of a sample of users, as (track_id, rounded score) lists."""
    out = {}
    for uid, tid in zip(users, tracks, strict=True):
        home = recommend.home(uid, 10, db=db, milvus=milvus, exclude=[])
        nxt = recommend.next_song(uid, tid, 5, db=db, milvus=milvus, exclude=[], content=False)
        out[uid] = ([(r.track_id, round(r.score, 4)) for r in home], [(r.track_id, round(r.score, 4)) for r in nxt])
    return out


def test_a_kill_at_each_publish_step_serves_the_old_or_the_new_model(stores):
    """A new version (late partition) is published step by step; after each step — the state a kill there
    leaves — every reader's home() and next_song() is exactly the old model's answer or exactly the new
    one's, never a mix. A kill mid-publish and a re-run from the start completes it."""
    root, db, milvus, qdrant = stores
    first, _ = train_and_publish(root, db, milvus, qdrant, WEEK2)
    users = [d["_id"] for d in db["users"].find({f"latent_vectors.{first['version']}": {"$exists": True}},
                                               sort=[("_id", 1)]).limit(READERS)]
    items = pq.read_table(root / first["item_factors"]).column("track_id").to_pylist()
    tracks = items[:READERS]
    old = read_all(db, milvus, users, tracks)

    add_late_partition(root, db)
    answers = {}
    summary = model.train(root, db, WEEK2, PARAMS, run_id="late")  # step "train"
    answers["train"] = read_all(db, milvus, users, tracks)
    publish.gate(db, summary["version"])  # step "gate"
    answers["gate"] = read_all(db, milvus, users, tracks)
    spec = mv.IndexSpec("HNSW", "IP")
    names = []
    state: dict = {}
    for name, fn in publish.steps(db, root, summary, milvus, qdrant, index=spec):
        if name == "swap":
            break  # killed before the swap
        fn(state)
        names.append(name)
        answers[name] = read_all(db, milvus, users, tracks)
    assert mv.alias_target(milvus, ALIAS) == collection_name(first["version"])
    # the re-run: training reused, the gate decides again, every step again, readers after each
    again = model.train(root, db, WEEK2, PARAMS, run_id="rerun")
    assert again["reused"] is True and again["version"] == summary["version"]
    publish.gate(db, again["version"])
    state = {}
    for name, fn in publish.steps(db, root, again, milvus, qdrant, index=spec):
        fn(state)
        names.append(name)
        answers[f"rerun-{name}"] = read_all(db, milvus, users, tracks)
    assert names == ["upsert", "index", "mirror", "users"] + [
        "upsert", "index", "mirror", "users", "swap", "activate", "cleanup"]
    new = answers["rerun-cleanup"]
    assert new != old  # the late partition really changed the model
    flipped = {"rerun-swap", "rerun-activate", "rerun-cleanup"}
    for step, got in answers.items():
        for uid in users:
            assert got[uid] in (old[uid], new[uid]), (step, uid)  # one model per answer, never a mix
        assert got == (new if step in flipped else old), step
    assert db["models"].find_one({"_id": summary["version"]})["status"] == "active"
    assert db["models"].find_one({"_id": first["version"]})["status"] == "retired"

    # a third version prunes the first one's collection and its user vectors with it
    add_late_partition(root, db, day="2009-04-30")
    third, _ = train_and_publish(root, db, milvus, qdrant, WEEK2)
    assert collection_name(first["version"]) not in mv.versions(milvus, ALIAS)
    assert db["users"].count_documents({f"latent_vectors.{first['version']}": {"$exists": True}}) == 0
    assert db["users"].count_documents({f"latent_vectors.{summary['version']}": {"$exists": True}}) > 0
    # ... and its played tracks; the retained versions keep theirs (a rollback finds them)
    assert db["users"].count_documents({f"played_tracks.{first['version']}": {"$exists": True}}) == 0
    for kept in (summary["version"], third["version"]):
        assert db["users"].count_documents({f"played_tracks.{kept}": {"$exists": True}}) == \
            db["users"].count_documents({f"latent_vectors.{kept}": {"$exists": True}}) > 0


def test_an_index_change_on_the_live_collection_is_built_off_to_the_side(stores, milvus_uri):
    """Re-publishing the live version with another index type builds a side collection, verifies it by
    recall, swaps the alias: a loop of searches meanwhile never fails, and the live collection is never
    released. The new index serves after the swap."""
    import threading

    root, db, milvus, qdrant = stores
    first, _ = train_and_publish(root, db, milvus, qdrant, WEEK2)
    live = collection_name(first["version"])
    users = [d["_id"] for d in db["users"].find({f"latent_vectors.{first['version']}": {"$exists": True}}).limit(5)]
    stop, started = threading.Event(), threading.Event()
    done, failed = [0], []

    def readers():
        client = mv.connect(milvus_uri)  # a reader of its own, like a serving process
        while not stop.is_set():
            for uid in users:
                try:
                    assert len(recommend.home(uid, 10, db=db, milvus=client, exclude=[])) == 10
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failed.append(repr(e))
            started.set()

    thread = threading.Thread(target=readers, daemon=True)
    thread.start()
    assert started.wait(120)
    ivf = mv.IndexSpec("IVF_FLAT", "IP", {"nlist": 8})
    # the live collection's index is never rebuilt in place
    with pytest.raises(mv.VectorStoreError, match="never rebuilt in place"):
        mv.ensure_index(milvus, live, ivf)
    before = done[0]
    publish.gate(db, first["version"])
    out = publish.publish(db, root, first, milvus, qdrant, index=ivf)
    while done[0] < before + 20 and thread.is_alive():  # readers keep going across the swap
        stop.wait(0.05)
    stop.set()
    thread.join(120)
    assert failed == [] and done[0] >= before + 20
    side = out["upsert"]["collection"]
    assert side.startswith(live + "_ix") and out["upsert"]["live"] is False and out["index"]["recall"] >= 0.8
    assert mv.alias_target(milvus, ALIAS) == side == qd.alias_target(qdrant, ALIAS)
    assert mv.describe_index(milvus, side)["index_type"] == "IVF_FLAT"
    assert mv.describe_index(milvus, live)["index_type"] == "HNSW"  # untouched, kept for in-flight readers
    doc = db["models"].find_one({"_id": first["version"]})
    assert doc["status"] == "active" and doc["collection"] == side
    assert recommend.serving_model(milvus) == (first["version"], side)
    # the same params again: the live side collection is only checked, nothing is written
    again = publish.publish(db, root, first, milvus, qdrant, index=ivf)
    assert again["upsert"] == {"collection": side, "live": True, "rows": again["upsert"]["rows"], "deleted": 0,
                               "written": 0}
