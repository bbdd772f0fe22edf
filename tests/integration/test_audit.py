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
from pymilvus import MilvusClient
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
    db["models"].insert_one({"_id": VERSION, "kind": "als", "status": "candidate", "params": {"factors": DIM},
                             "artifacts": artifacts, "window": {"start": datetime(2009, 2, 4),
                                                                "end": datetime(2009, 5, 5)},
                             "collection": collection_name(VERSION)})
    db["users"].insert_many([{"_id": u} for u in users + ["user_x1", "user_x2"]])
    milvus = MilvusClient(uri=milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    summary = {"version": VERSION, "item_factors": artifacts[0]["path"], "user_factors": artifacts[1]["path"],
               "factors": DIM}
    publish.publish(db, root, summary, milvus, qdrant, index=mv.IndexSpec("HNSW", "IP"))
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
        "users": sorted((d["_id"], d.get("latent_vector"), d.get("model_version")) for d in db["users"].find()),
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
    # users: vector removed, wrong dimension, other version, vectors on users outside the model
    db["users"].update_one({"_id": "user_001"}, {"$unset": {"latent_vector": "", "model_version": ""}})
    db["users"].update_one({"_id": "user_002"}, {"$set": {"latent_vector": [0.1] * (DIM + 2)}})
    db["users"].update_one({"_id": "user_003"}, {"$set": {"latent_vector": [0.1] * (DIM - 1)}})
    db["users"].update_one({"_id": "user_004"}, {"$set": {"model_version": "19990101_000000"}})
    db["users"].update_many({"_id": {"$in": ["user_x1", "user_x2"]}},
                            {"$set": {"latent_vector": [0.0] * DIM, "model_version": VERSION}})
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

    # a dry run: the same findings, a plan, and nothing written anywhere
    ctx = context(root, db, milvus, qdrant, "dry")
    dry = audit_all(ctx, dry_run=True, grace_minutes=0)
    assert set().union(*(found(p) for p in dry)) == want
    planned = {(a["store"], a["action"]) for p in dry for plan in p["plans"] for a in plan.get("actions", [])}
    assert ("lake", "upsert") in planned and ("mongo:users", "delete") in planned
    assert all(a["dry_run"] for p in dry for plan in p["plans"] for a in plan.get("actions", []))
    assert snapshot(root, db, milvus, qdrant) == before

    # the audit + repair: exactly the injected set, one pass, the re-audit inside is clean
    ctx = context(root, db, milvus, qdrant, "fix")
    parts = audit_all(ctx, repair=True, grace_minutes=0)
    assert set().union(*(found(p) for p in parts)) == want
    for p in parts:
        for plan in p["plans"]:
            assert plan["after"]["total"] == 0, plan["after"]
    doc = report.build("fix", parts, repair=True, dry_run=False, grace_minutes=0, max_findings=0)
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
    assert db["users"].count_documents({"model_version": {"$exists": True}}) == N_USERS
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


def test_grace_window_keeps_young_orphans(stores):
    root, db, milvus, qdrant = stores
    name = collection_name(VERSION)
    milvus.upsert(name, [{"track_id": "zz_young", "embedding": [0.5] * DIM}])
    parts = [run_scope("als", context(root, db, milvus, qdrant, "g1"), repair=True, grace_minutes=60)]
    assert ("als_items", f"milvus:{name}", "orphan", "zz_young") in found(parts[0])
    acts = {(a["store"], a["action"]) for p in parts for plan in p["plans"] for a in plan.get("actions", [])}
    assert (f"milvus:{name}", "kept_within_grace") in acts and (f"milvus:{name}", "delete") not in acts
    assert milvus.get(name, ids=["zz_young"])  # reported, not deleted
    assert ("als_items", f"milvus:{name}", "orphan", "zz_young") in found(parts[0], "after")
    # an hour later (first sighting kept across runs), the next repair deletes it
    db[core.STATE].update_many({}, {"$set": {"first_seen": datetime.now(UTC) - timedelta(minutes=61)}})
    later = run_scope("als", context(root, db, milvus, qdrant, "g2"), repair=True, grace_minutes=60)
    assert not milvus.get(name, ids=["zz_young"])
    assert found(later, "after") == set()


def test_lake_file_without_a_copy_is_flagged(stores):
    root, db, milvus, qdrant = stores
    rel = "listens/date=2009-05-05/import-t.parquet"
    (Path(root.path) / rel).unlink()
    part = run_scope("lake", context(root, db, milvus, qdrant, "f"), repair=True, grace_minutes=0)
    plan = part["plans"][0]
    assert [(a["action"], a["ids"]) for a in plan["actions"]] == [("flagged_no_copy", [rel])]
    assert plan["after"]["counts"] == {"lake": {"missing": 1}}
    assert db[core.STATE].find_one({"key": rel})["kind"] == "missing"  # the flag, kept until fixed
