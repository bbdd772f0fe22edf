"""Cross-store audit and repair (issue 6) on stores the tests fill themselves: a synthetic active ALS
model published to milvus-lite, Qdrant local mode and Mongo, and a registered lake. Faults are
injected, the audit must find exactly them, one repair pass must fix them all, a second audit must be
clean, a dry run must write nothing, young orphans must survive, a concurrent writer must not lose data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient, models
from upath import UPath

from musicrec import registry
from musicrec.als import publish
from musicrec.als.model import factors_table
from musicrec.als.params import ALIAS, collection_name
from musicrec.audit import core, report
from musicrec.audit.run import run_scope
from musicrec.ids import point_id
from musicrec.settings import staging_dir
from musicrec.vectors import milvus as mv
from tests.integration.test_als_publish import clean_milvus

pytestmark = pytest.mark.integration

VERSION = "20090505_abcdef"
DIM = 8
N_ITEMS, N_USERS = 300, 60


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture
def stores(mongo_db, milvus_uri, tmp_path):
    """An active ALS model (artifacts registered in the lake) published everywhere, plus listens files."""
    lake = tmp_path / "lake"
    root = UPath(lake)
    db = mongo_db
    items = [f"t{n:04d}" for n in range(N_ITEMS)]
    users = [f"user_{n:03d}" for n in range(N_USERS)]
    records, artifacts = [], []
    for kind, ids, col, seed in (("item_factors", items, "track_id", 1), ("user_factors", users, "user_id", 2)):
        rel = f"models/als/{VERSION}/{kind}.parquet"
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(factors_table(np.array(ids, dtype=object), _vectors(len(ids), seed), col), lake / rel)
        data = (lake / rel).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        artifacts.append({"path": rel, "bytes": len(data), "sha256": sha, "kind": kind, "rows": len(ids)})
        records.append(registry.PartitionRecord(rel, "als", "2009-05-05", "als_training", len(ids), len(data), sha,
                                                "t"))
    registry.record(db, records)
    db["models"].insert_one({"_id": VERSION, "kind": "als", "status": "candidate", "params": {"factors": DIM},
                             "artifacts": artifacts, "window": {"start": datetime(2009, 2, 4),
                                                                "end": datetime(2009, 5, 5)},
                             "collection": collection_name(VERSION)})
    db["users"].insert_many([{"_id": u} for u in users + ["user_x1", "user_x2"]])
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    summary = {"version": VERSION, "item_factors": artifacts[0]["path"], "user_factors": artifacts[1]["path"],
               "factors": DIM}
    publish.publish(db, root, summary, milvus, qdrant, index=mv.IndexSpec("HNSW", "IP"))
    # the listens files (random bytes: only their sizes and checksums matter here) come after the
    # publish, which reads the model's window for the played tracks and refuses files that are not Parquet
    records = []
    for day in range(1, 6):
        rel = f"listens/date=2009-05-0{day}/import-t.parquet"
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(2000 + day)
        (lake / rel).write_bytes(data)
        records.append(registry.PartitionRecord(rel, "t", f"2009-05-0{day}", "import-t", 10, len(data),
                                                hashlib.sha256(data).hexdigest(), "t"))
    (lake / "raw/t").mkdir(parents=True)
    (lake / "raw/t/unregistered.bin").write_bytes(b"not the registry's business")
    registry.record(db, records)
    yield root, db, milvus, qdrant
    qdrant.close()
    clean_milvus(milvus)


def context(root, db, milvus, qdrant, run_id="t1") -> core.AuditContext:
    return core.AuditContext(db=db, root=root, milvus=milvus, qdrant=qdrant, run_id=run_id, examples=1000)


def found(part: dict, state: str = "before") -> set[tuple[str, str, str]]:
    """(plan, store, kind, id) findings listed as examples (examples=1000 lists them all)."""
    out = set()
    for plan in part["plans"]:
        for key, ids in (plan.get(state) or {}).get("examples", {}).items():
            store, kind = key.split("|")
            out |= {(plan["name"], store, kind, i) for i in ids}
    return out


def snapshot(root, db, milvus, qdrant) -> dict:
    name = collection_name(VERSION)
    lake = Path(root.path)
    return {
        "milvus": sorted((r["track_id"], tuple(r["embedding"])) for r in mv.iter_rows(milvus, name, ["track_id",
                                                                                                      "embedding"])),
        "qdrant": sorted((str(p.id), json.dumps(p.payload, sort_keys=True), tuple(p.vector))
                         for p in qdrant.scroll(name, limit=10_000, with_vectors=True)[0]),
        "users": sorted((d["_id"], d.get("latent_vectors")) for d in db["users"].find()),
        "lake": sorted((str(p.relative_to(lake)), p.read_bytes()) for p in lake.rglob("*")
                       if p.is_file() and not str(p.relative_to(lake)).startswith("audit/")),
        "aliases": (mv.alias_target(milvus, ALIAS), publish.qd.alias_target(qdrant, ALIAS)),
        "state": list(db[core.STATE].find()),
    }


def inject(root, db, milvus, qdrant) -> set[tuple[str, str, str, str]]:
    """Every fault, and the exact findings it must produce."""
    name = collection_name(VERSION)
    lake = Path(root.path)
    mil, qdr = f"milvus:{name}", f"qdrant:{name}"
    want = set()
    # Milvus: 3 deleted, 2 orphans, 2 vectors overwritten
    milvus.delete(name, ids=["t0001", "t0002", "t0003"])
    want |= {("als_items", mil, "missing", i) for i in ("t0001", "t0002", "t0003")}
    milvus.upsert(name, [{"track_id": i, "embedding": [0.5] * DIM} for i in ("zz_orphan1", "zz_orphan2")])
    want |= {("als_items", mil, "orphan", i) for i in ("zz_orphan1", "zz_orphan2")}
    milvus.upsert(name, [{"track_id": i, "embedding": [0.25] * DIM} for i in ("t0010", "t0011")])
    want |= {("als_items", mil, "stale", i) for i in ("t0010", "t0011")}
    # Qdrant: 2 deleted, 1 orphan, a payload fingerprint altered, a vector altered
    qdrant.delete(name, points_selector=models.PointIdsList(points=[point_id("t0020"), point_id("t0021")]))
    want |= {("als_items", qdr, "missing", i) for i in ("t0020", "t0021")}
    qdrant.upsert(name, points=[models.PointStruct(id=point_id("zz_q"), vector=[0.1] * DIM,
                                                   payload={"track_id": "zz_q", "model_version": VERSION})])
    qdrant.set_payload(name, payload={"model_version": "19990101_000000"}, points=[point_id("t0030")])
    qdrant.upsert(name, points=[models.PointStruct(id=point_id("t0031"), vector=[0.3] * DIM,
                                                   payload={"track_id": "t0031", "model_version": VERSION})])
    want |= {("als_items", qdr, "orphan", "zz_q"), ("als_items", qdr, "stale", "t0030"),
             ("als_items", qdr, "stale", "t0031")}
    # users (latent_vectors.<active version>): vector removed, wrong dimension, another model's values,
    # vectors on users outside the model; another version's key (roll-back) is not a finding
    field = f"latent_vectors.{VERSION}"
    db["users"].update_one({"_id": "user_001"}, {"$unset": {field: ""}})
    db["users"].update_one({"_id": "user_002"}, {"$set": {field: [0.1] * (DIM + 2)}})
    db["users"].update_one({"_id": "user_003"}, {"$set": {field: [0.1] * (DIM - 1)}})
    db["users"].update_one({"_id": "user_004"}, {"$set": {field: [0.7] * DIM}})
    db["users"].update_one({"_id": "user_005"}, {"$set": {"latent_vectors.19990101_000000": [0.7] * DIM}})
    db["users"].update_many({"_id": {"$in": ["user_x1", "user_x2"]}}, {"$set": {field: [0.0] * DIM}})
    want |= {("als_users", "mongo:users", "missing", "user_001"),
             ("als_users", "mongo:users", "dimension_mismatch", "user_002"),
             ("als_users", "mongo:users", "dimension_mismatch", "user_003"),
             ("als_users", "mongo:users", "stale", "user_004"),
             ("als_users", "mongo:users", "orphan", "user_x1"), ("als_users", "mongo:users", "orphan", "user_x2")}
    # lake: one truncated, one altered in place (same size), one deleted, one unknown file, one outside
    cache = staging_dir() / "lake-cache"
    for day in (1, 2, 3):  # what a reader on S3 would have cached: verified copies to re-upload from
        rel = f"listens/date=2009-05-0{day}/import-t.parquet"
        sha = registry.get(db, rel)["sha256"]
        (cache / sha[:2] / sha / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lake / rel, cache / sha[:2] / sha / rel)
    p1 = lake / "listens/date=2009-05-01/import-t.parquet"
    p1.write_bytes(p1.read_bytes()[:100])
    p2 = lake / "listens/date=2009-05-02/import-t.parquet"
    data = bytearray(p2.read_bytes())
    data[10] ^= 0xFF
    p2.write_bytes(bytes(data))
    (lake / "listens/date=2009-05-03/import-t.parquet").unlink()
    (lake / "listens/date=2009-05-04/stray.parquet").write_bytes(b"orphan")
    (lake / "raw/t/another.bin").write_bytes(b"still not a finding")
    want |= {("lake", "lake", "size_mismatch", "listens/date=2009-05-01/import-t.parquet"),
             ("lake", "lake", "checksum_mismatch", "listens/date=2009-05-02/import-t.parquet"),
             ("lake", "lake", "missing", "listens/date=2009-05-03/import-t.parquet"),
             ("lake", "lake", "orphan", "listens/date=2009-05-04/stray.parquet")}
    return want


def audit_all(ctx, **kwargs) -> list[dict]:
    return [run_scope("lake", ctx, **kwargs), run_scope("als", ctx, **kwargs)]


def test_clean_stores_audit_clean(stores):
    root, db, milvus, qdrant = stores
    parts = audit_all(context(root, db, milvus, qdrant))
    assert [found(p) for p in parts] == [set(), set()]
    rows = {k: v for p in parts for plan in p["plans"] for k, v in plan["before"]["rows"].items()}
    assert rows[f"milvus:{collection_name(VERSION)}"] == N_ITEMS == rows[f"qdrant:{collection_name(VERSION)}"]
    assert rows["mongo:users"] == N_USERS


def test_faults_found_exactly_repaired_in_one_pass_then_clean(stores):
    root, db, milvus, qdrant = stores
    want = inject(root, db, milvus, qdrant)
    before = snapshot(root, db, milvus, qdrant)

    # mode plan: the same findings, a plan, and nothing written anywhere
    ctx = context(root, db, milvus, qdrant, "dry")
    dry = audit_all(ctx, mode="plan", grace_minutes=0)
    assert set().union(*(found(p) for p in dry)) == want
    planned = {(a["store"], a["action"]) for p in dry for plan in p["plans"] for a in plan.get("actions", [])}
    assert ("lake", "upsert") in planned and ("mongo:users", "delete") in planned
    assert all("after" not in plan for p in dry for plan in p["plans"])  # nothing repaired, nothing re-audited
    plan_doc = report.build("dry", dry, mode="plan", grace_minutes=0, max_findings=0)
    assert plan_doc["params"]["mode"] == "plan" and "mode plan: nothing written" in report.table(plan_doc)
    assert snapshot(root, db, milvus, qdrant) == before

    # the audit + repair: exactly the injected set, one pass, the re-audit inside is clean
    ctx = context(root, db, milvus, qdrant, "fix")
    parts = audit_all(ctx, mode="repair", grace_minutes=0)
    assert set().union(*(found(p) for p in parts)) == want
    for p in parts:
        for plan in p["plans"]:
            assert plan["after"]["total"] == 0, plan["after"]
    doc = report.build("fix", parts, mode="repair", grace_minutes=0, max_findings=0)
    assert doc["findings"] == len(want) and doc["clean"] and doc["passed"]
    acts = {(a["store"], a["action"]): a["count"] for a in doc["actions"]}
    name = collection_name(VERSION)
    assert acts[(f"milvus:{name}", "upsert")] == 5 and acts[(f"milvus:{name}", "delete")] == 2
    assert acts[(f"qdrant:{name}", "upsert")] == 4 and acts[(f"qdrant:{name}", "delete")] == 1
    assert acts[("mongo:users", "set_latent_vector")] == 4 and acts[("mongo:users", "unset_latent_vector")] == 2
    assert acts[("lake", "reupload")] == 3 and acts[("lake", "moved_to_audit/fix/orphans")] == 1
    assert (Path(root.path) / "audit/fix/orphans/listens/date=2009-05-04/stray.parquet").read_bytes() == b"orphan"
    # the stores hold the model again, exactly
    name = collection_name(VERSION)
    items = pq.read_table(Path(root.path) / f"models/als/{VERSION}/item_factors.parquet")
    got = {r["track_id"]: r["embedding"] for r in mv.iter_rows(milvus, name, ["track_id", "embedding"])}
    assert set(got) == set(items.column("track_id").to_pylist())
    assert db["users"].count_documents({f"latent_vectors.{VERSION}": {"$exists": True}}) == N_USERS
    # an independent second audit is clean, and the state of open findings is empty
    again = audit_all(context(root, db, milvus, qdrant, "again"))
    assert [found(p) for p in again] == [set(), set()]
    assert db[core.STATE].count_documents({}) == 0

    # the report: json + a self-contained html page with the chart
    paths = report.write(root, doc)
    page = (Path(root.path) / paths["html"]).read_text()
    assert "<svg" in page and "http" not in page.split("<body>")[1].replace("http://www.w3.org/2000/svg", "")
    assert json.loads((Path(root.path) / paths["json"]).read_text())["findings"] == len(want)
    assert "mongo:users" in report.table(doc)


def test_repair_guard_compares_versions_and_fingerprints(stores):
    """The guard refuses when the active model's id changed *or* when the same id now has other artifacts
    (or inputs, or serving collection) than the audit compared against."""
    from musicrec.audit import als as als_audit

    root, db, milvus, qdrant = stores
    [items, users] = als_audit.plans(context(root, db, milvus, qdrant))
    assert items.guard() is None and users.guard() is None
    doc = db["models"].find_one({"_id": VERSION})
    db["models"].update_one({"_id": VERSION}, {"$set": {"artifacts.1.sha256": "0" * 64}})
    assert "fingerprint" in users.guard() and "fingerprint" in items.guard()
    db["models"].update_one({"_id": VERSION}, {"$set": {"artifacts": doc["artifacts"]}})
    assert users.guard() is None
    db["models"].update_one({"_id": VERSION}, {"$set": {"status": "retired"}})
    db["models"].insert_one(doc | {"_id": "20090506_abcdef", "status": "active"})
    assert "changed from" in users.guard()


def test_grace_window_keeps_young_orphans(stores):
    root, db, milvus, qdrant = stores
    name = collection_name(VERSION)
    milvus.upsert(name, [{"track_id": "zz_young", "embedding": [0.5] * DIM}])
    parts = [run_scope("als", context(root, db, milvus, qdrant, "g1"), mode="repair", grace_minutes=60)]
    assert ("als_items", f"milvus:{name}", "orphan", "zz_young") in found(parts[0])
    acts = {(a["store"], a["action"]) for p in parts for plan in p["plans"] for a in plan.get("actions", [])}
    assert (f"milvus:{name}", "kept_within_grace") in acts and (f"milvus:{name}", "delete") not in acts
    assert milvus.get(name, ids=["zz_young"])  # reported, not deleted
    assert ("als_items", f"milvus:{name}", "orphan", "zz_young") in found(parts[0], "after")
    # an hour later (first sighting kept across runs), the next repair deletes it
    db[core.STATE].update_many({}, {"$set": {"first_seen": datetime.now(UTC) - timedelta(minutes=61)}})
    later = run_scope("als", context(root, db, milvus, qdrant, "g2"), mode="repair", grace_minutes=60)
    assert not milvus.get(name, ids=["zz_young"])
    assert found(later, "after") == set()


def test_wrong_alias_and_lost_mirror_collection_are_rebuilt(stores):
    root, db, milvus, qdrant = stores
    name = collection_name(VERSION)
    mv.ensure_collection(milvus, "music_collection_vother", DIM)
    milvus.alter_alias("music_collection_vother", ALIAS)
    qdrant.delete_collection(name)
    part = run_scope("als", context(root, db, milvus, qdrant, "s"), mode="repair", grace_minutes=0)
    items = part["plans"][0]
    assert found(part) == {("als_items", f"milvus:alias {ALIAS}", "stale", ALIAS),
                           ("als_items", f"qdrant:{name}", "missing", name),
                           ("als_items", f"qdrant:alias {ALIAS}", "stale", ALIAS)}
    assert [a["action"] for a in items["actions"]] == ["swap_alias", "rebuild_collection", "swap_alias"]
    assert items["after"]["total"] == 0
    assert mv.alias_target(milvus, ALIAS) == name and publish.qd.alias_target(qdrant, ALIAS) == name
    assert qdrant.count(name).count == N_ITEMS
    milvus.drop_collection("music_collection_vother")


def test_lake_file_without_a_copy_is_flagged(stores):
    root, db, milvus, qdrant = stores
    rel = "listens/date=2009-05-05/import-t.parquet"
    (Path(root.path) / rel).unlink()
    part = run_scope("lake", context(root, db, milvus, qdrant, "f"), mode="repair", grace_minutes=0)
    plan = part["plans"][0]
    assert [(a["action"], a["ids"]) for a in plan["actions"]] == [("flagged_no_copy", [rel])]
    assert plan["after"]["counts"] == {"lake": {"missing": 1}}
    assert db[core.STATE].find_one({"key": rel})["kind"] == "missing"  # the flag, kept until fixed


# ----------------------------------------------------------------------------- lyrics (the emb contract)

LYR_DIM = 8
MODEL_ID = "test/lyrics-model"
SLUG = "audit_test"


def lyrics_rows(keys: list[str], version: str = "v1", seed: int = 0):
    from musicrec.embeddings import store

    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(len(keys), LYR_DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    rows = [{"track_id": k, "title": f"Song {k}", "artist": "Band", "text": f"Song {k} Band la la {version}",
             "lyrics_sha256": hashlib.sha256(f"{k}-{version}".encode()).hexdigest(), "model_id": MODEL_ID}
            for k in keys]
    return store.delta_table(rows, dense, None, LYR_DIM)


def publish_lyrics(root, db, milvus, qdrant, table, run_id: str) -> None:
    """What lyrics_embeddings does per the contract: delta file + registry, vectors, songs.embedding."""
    from musicrec.embeddings import store

    rel = store.part_path(SLUG, run_id, 0)
    store.write_delta(root, db, rel, table, run_id)
    name = store.collection_name(SLUG)
    store.upsert_milvus(milvus, name, table)
    for field in ("dense", "text_bm25"):
        itype, metric, params = store.INDEXES[field]
        mv.ensure_index(milvus, name, mv.IndexSpec(itype, metric, params), field=field)
    store.upsert_qdrant(qdrant, name, table)
    for k, sha in zip(table.column("track_id").to_pylist(), table.column("lyrics_sha256").to_pylist(), strict=True):
        db["songs"].update_one({"_id": k}, {"$set": {"lyrics": {"status": "found", "sha256": sha},
                                                     "embedding": {"model_id": MODEL_ID, "lyrics_sha256": sha,
                                                                   "shard": rel}}}, upsert=True)


@pytest.fixture
def lyrics_stores(mongo_db, milvus_uri, tmp_path):
    from musicrec.embeddings import store

    root = UPath(tmp_path / "lake")
    db = mongo_db
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    keys = [f"s{n:03d}" for n in range(40)]
    publish_lyrics(root, db, milvus, qdrant, lyrics_rows(keys), "r1")
    name = store.collection_name(SLUG)
    mv.swap_alias(milvus, store.ALIAS, name)
    publish.qd.swap_alias(qdrant, store.ALIAS, name)
    db["songs"].insert_many([{"_id": f"n{n}", "lyrics": {"status": "not_found"}} for n in range(5)]
                            + [{"_id": "synced_only", "lyrics": {"status": "found", "sha256": None}}])
    db["models"].insert_one({"_id": store.model_doc_id(SLUG), "kind": "embedding", "model_id": MODEL_ID,
                             "dim": LYR_DIM, "sparse": False, "collection": name, "status": "active"})
    yield root, db, milvus, qdrant, name
    qdrant.close()
    clean_milvus(milvus)


def test_lyrics_faults_found_repaired_and_a_concurrent_writer_keeps_its_data(lyrics_stores):
    from musicrec.audit import lyrics
    from musicrec.embeddings import store

    root, db, milvus, qdrant, name = lyrics_stores
    mil, qdr, emb = f"milvus:{name}", f"qdrant:{name}", "mongo:songs.embedding"
    orphan = lyrics_rows(["n0", "gone1"], "old", seed=5)  # a song without lyrics, a song that no longer exists
    store.upsert_milvus(milvus, name, orphan)
    store.upsert_qdrant(qdrant, name, orphan.slice(1))
    store.delete_ids(milvus, None, name, ["s001", "s002"])
    store.delete_ids(None, qdrant, name, ["s003"])
    store.upsert_milvus(milvus, name, lyrics_rows(["s004"], "older", seed=9))  # an older lyrics version
    qdrant.set_payload(name, payload={"model_id": "other/model"}, points=[point_id("s005")])
    db["songs"].update_one({"_id": "n1"}, {"$set": {"embedding": {"model_id": MODEL_ID, "lyrics_sha256": "x",
                                                                  "shard": "gone"}}})
    want = {(mil, "orphan", "n0"), (mil, "orphan", "gone1"), (qdr, "orphan", "gone1"), (mil, "missing", "s001"),
            (mil, "missing", "s002"), (qdr, "missing", "s003"), (mil, "stale", "s004"), (qdr, "stale", "s005"),
            (emb, "orphan", "n1")}
    # with writers that race the repair: the audit lists, then they write, then the repair runs
    ctx = context(root, db, milvus, qdrant, "ly")
    [plan] = lyrics.plans(ctx)
    findings, _ = core.audit(plan, ctx)
    try:
        got = {(store_, kind, i) for (store_, kind), ids in findings.examples.items() for i in ids}
        assert got == want
        core.track(db, ctx, plan, findings)
        # writer 1: the orphan "gone1" becomes a real song with found lyrics, embedded
        # writer 2: "s001" (missing at listing time) gets new lyrics, embedded into a newer delta
        publish_lyrics(root, db, milvus, qdrant, lyrics_rows(["gone1", "s001"], "new", seed=11), "r2")
        fresh = {r["track_id"]: r["lyrics_sha256"] for r in milvus.get(name, ids=["gone1", "s001"],
                                                                       output_fields=["lyrics_sha256"])}
        actions = core.repair(plan, ctx, findings, grace_minutes=0)
    finally:
        findings.close()
    acts = {(a["store"], a["action"]): sorted(a["ids"]) for a in actions}
    assert acts[(mil, "delete")] == ["n0"]  # gone1 is a song again: re-checked, kept
    assert (qdr, "delete") not in acts
    assert acts[(mil, "upsert_from_shard")] == ["s002", "s004"] and acts[(qdr, "upsert_from_shard")] == ["s003", "s005"]
    assert acts[(emb, "unset_embedding")] == ["n1"]
    assert "s001" in acts[(mil, "resolved_meanwhile")]
    kept = {r["track_id"]: r["lyrics_sha256"] for r in milvus.get(name, ids=["gone1", "s001"],
                                                                  output_fields=["lyrics_sha256"])}
    assert kept == fresh  # the writer's vectors survive, not overwritten by the older shard
    # a second audit is clean
    part = run_scope("lyrics", context(root, db, milvus, qdrant, "ly2"))
    assert found(part) == set()


def test_lyrics_change_without_a_vector_is_flagged_for_encoding(lyrics_stores):
    root, db, milvus, qdrant, name = lyrics_stores
    db["songs"].update_one({"_id": "s007"}, {"$set": {"lyrics.sha256": "f" * 64}})  # new lyrics, not embedded yet
    part = run_scope("lyrics", context(root, db, milvus, qdrant, "enc"), mode="repair", grace_minutes=0)
    plan = part["plans"][0]
    assert {(s, k) for s, kinds in plan["before"]["counts"].items() for k in kinds} == {
        (f"milvus:{name}", "stale"), (f"qdrant:{name}", "stale"), ("mongo:songs.embedding", "stale")}
    acts = {(a["store"], a["action"]): a["ids"] for a in plan["actions"]}
    assert acts[(f"milvus:{name}", "flagged_needs_encoding")] == ["s007"]
    assert plan["after"]["total"] == 3  # left for lyrics_embeddings, reported again


# ----------------------------------------------------------------------------- the DAG

def test_store_audit_dag_repairs_and_reports(stores, airflow_db, mongo_uri, milvus_uri, tmp_path):
    from tests.conftest import airflow_dags_test

    root, db, milvus, qdrant = stores
    name = collection_name(VERSION)
    milvus.delete(name, ids=["t0100"])
    qdrant.delete(name, points_selector=models.PointIdsList(points=[point_id("t0101")]))
    (Path(root.path) / "models/als/stray.json").write_text("{}")
    qdrant.close()  # local mode: one process at a time, the DAG's tasks open it
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": Path(root.path).as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + db.name,
           "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps({"conn_type": "milvus", "extra": {"uri": milvus_uri}}),
           "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps({"conn_type": "qdrant",
                                                      "extra": {"path": str(tmp_path / "qdrant")}})}
    out = airflow_dags_test("store_audit", {"mode": "repair", "grace_minutes": 0}, env)
    for task in ("audit_lake", "audit_als", "audit_lyrics", "report", "check"):
        assert f"task_id={task}" in out
    [report_json] = list((Path(root.path) / "audit").glob("*/report.json"))
    doc = json.loads(report_json.read_text())
    assert doc["findings"] == 3 and doc["clean"] and doc["passed"]
    assert {(r["store"], r["kind"]) for r in doc["counts"] if r["state"] == "before"} == {
        (f"milvus:{name}", "missing"), (f"qdrant:{name}", "missing"), ("lake", "orphan")}
    assert [p["plans"][0].get("skipped") for p in doc["scopes"] if p["scope"] == "lyrics"] == [
        "no active embedding model (lyrics_embeddings has not published one)"]
    assert (report_json.parent / "report.html").exists() and "missing" in out  # the table is in the task log
    assert milvus.get(name, ids=["t0100"])


def test_lake_scope_on_s3(s3_endpoint, mongo_db):
    """The same listing, hashing and orphan move through fsspec on an object store (moto)."""
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="audit-lake")
    root = UPath("s3://audit-lake", endpoint_url=s3_endpoint, key="testing", secret="testing")
    records = []
    for day in (1, 2):
        rel = f"listens/date=2009-05-0{day}/daily.parquet"
        data = os.urandom(500 + day)
        with (root / rel).open("wb") as fh:
            fh.write(data)
        records.append(registry.PartitionRecord(rel, "landing", f"2009-05-0{day}", "daily", 1, len(data),
                                                hashlib.sha256(data).hexdigest(), "t"))
    registry.record(mongo_db, records + [registry.PartitionRecord(
        "profiles/users.parquet", "profiles", None, "import-t", 1, 10, "0" * 64, "t")])
    with (root / "embeddings/m/run=x/part-00000.parquet").open("wb") as fh:
        fh.write(b"unregistered")
    with (root / "listens/date=2009-05-01/daily.parquet").open("wb") as fh:
        fh.write(b"rewritten")
    ctx = core.AuditContext(db=mongo_db, root=root, run_id="s3", examples=100)
    part = run_scope("lake", ctx, mode="repair", grace_minutes=0)
    assert found(part) == {("lake", "lake", "size_mismatch", "listens/date=2009-05-01/daily.parquet"),
                           ("lake", "lake", "missing", "profiles/users.parquet"),
                           ("lake", "lake", "orphan", "embeddings/m/run=x/part-00000.parquet")}
    assert not (root / "embeddings/m/run=x/part-00000.parquet").exists()
    with (root / "audit/s3/orphans/embeddings/m/run=x/part-00000.parquet").open("rb") as fh:
        assert fh.read() == b"unregistered"
    assert part["plans"][0]["after"]["counts"] == {"lake": {"missing": 1, "size_mismatch": 1}}  # no copy: flagged


def test_collection_of_another_dimension_is_flagged(lyrics_stores):
    root, db, milvus, qdrant, name = lyrics_stores
    db["models"].update_one({"kind": "embedding"}, {"$set": {"dim": LYR_DIM * 2}})  # a model of another size
    part = run_scope("lyrics", context(root, db, milvus, qdrant, "dim"), mode="repair", grace_minutes=0)
    plan = part["plans"][0]
    assert found(part) == {("lyrics", f"milvus:{name}", "dimension_mismatch", name),
                           ("lyrics", f"qdrant:{name}", "dimension_mismatch", name)}
    assert [(a["store"], a["action"]) for a in plan["actions"]] == [(f"milvus:{name}", "flagged"),
                                                                    (f"qdrant:{name}", "flagged")]
    assert plan["after"]["total"] == 2 and milvus.has_collection(name)  # nothing dropped


def test_audit_state_holds_exactly_the_findings_still_open_after_a_repair(stores):
    """A repair that leaves 1 finding open leaves exactly 1 audit_state document (it used to keep
    every repaired finding too); a repaired orphan that turns up again starts a fresh grace window."""
    root, db, milvus, qdrant = stores
    name = collection_name(VERSION)
    want = inject(root, db, milvus, qdrant)
    rel = "listens/date=2009-05-05/import-t.parquet"
    (Path(root.path) / rel).unlink()  # no copy to restore it from: flagged, stays open
    parts = audit_all(context(root, db, milvus, qdrant, "fix1"), mode="repair", grace_minutes=0)
    assert len(set().union(*(found(p) for p in parts))) >= len(want)
    assert sum(plan["after"]["total"] for p in parts for plan in p["plans"]) == 1
    docs = list(db[core.STATE].find())
    assert [(d["key"], d["kind"]) for d in docs] == [(rel, "missing")]

    # hours later, an orphan the repair deleted is written again: its grace window applies again
    db[core.STATE].update_many({}, {"$set": {"first_seen": datetime.now(UTC) - timedelta(hours=5)}})
    milvus.upsert(name, [{"track_id": "zz_orphan1", "embedding": [0.5] * DIM}])
    later = run_scope("als", context(root, db, milvus, qdrant, "fix2"), mode="repair", grace_minutes=60)
    acts = {(a["store"], a["action"]): a["ids"] for plan in later["plans"] for a in plan.get("actions", [])}
    assert acts.get((f"milvus:{name}", "kept_within_grace")) == ["zz_orphan1"]
    assert milvus.get(name, ids=["zz_orphan1"])
