"""A third vector store needs no change in the callers (issue 15): an in-memory store (a test double of
``musicrec.vectors.VectorStore``, ``tests/memory_store.py``) is registered and named in the settings;
the factory opens it after Milvus and Qdrant, ``als_training``'s publish steps mirror the model into it,
swap its alias and clean it up, and the store audit compares and repairs it like the others."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
import pyarrow.parquet as pq
import pytest

from musicrec import registry, stores, vectors
from musicrec.als import publish
from musicrec.als.model import factors_table
from musicrec.als.params import ALIAS, collection_name
from musicrec.audit import core
from musicrec.audit.run import run_scope
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd
from tests import memory_store
from tests.integration.test_als_publish import clean_milvus

pytestmark = pytest.mark.integration

VERSION = "20090505_fedcba"
DIM = 8


@pytest.fixture
def memory_kind():
    """The registration: one line, as adding a store to ``musicrec.vectors.KINDS`` would be."""
    vectors.register("memory", memory_store)
    yield
    vectors.unregister("memory")
    memory_store.reset()


def _model(db, lake) -> dict:
    """An ALS model with its artifacts in the lake and the registry (a candidate, as after ``train``)."""
    artifacts, records = [], []
    rng = np.random.default_rng(7)
    for kind, col, n in (("item_factors", "track_id", 120), ("user_factors", "user_id", 20)):
        ids = [f"{col[0]}{i:04d}" for i in range(n)]
        rel = f"models/als/{VERSION}/{kind}.parquet"
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(factors_table(np.array(ids, dtype=object), rng.normal(size=(n, DIM)).astype(np.float32), col),
                       lake / rel)
        data = (lake / rel).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        artifacts.append({"path": rel, "bytes": len(data), "sha256": sha, "kind": kind, "rows": n})
        records.append(registry.PartitionRecord(rel, "als", "2009-05-05", "als_training", n, len(data), sha, "t"))
    registry.record(db, records)
    db["models"].insert_one({"_id": VERSION, "kind": "als", "status": "candidate", "params": {"factors": DIM},
                             "artifacts": artifacts, "window": {"start": datetime(2009, 2, 4), "end": datetime(2009, 5, 5)},
                             "collection": collection_name(VERSION)})
    return {"version": VERSION, "item_factors": artifacts[0]["path"], "user_factors": artifacts[1]["path"],
            "factors": DIM}


def test_a_registered_third_store_is_published_and_audited(mongo_uri, mongo_db, milvus_uri, tmp_path, memory_kind):
    lake = tmp_path / "lake"
    settings = stores.StoreSettings(
        mongo_uri=mongo_uri, mongo_db=mongo_db.name, lake_root=str(lake),
        vectors=(stores.VectorStoreSettings("milvus", uri=milvus_uri),
                 stores.VectorStoreSettings("qdrant", path=str(tmp_path / "qdrant")),
                 stores.VectorStoreSettings("memory", path="third")))
    opened = stores.open_stores(settings)
    db, root, vector_stores = opened.db, opened.root, opened.vectors
    assert [s.kind for s in vector_stores] == ["milvus", "qdrant", "memory"]
    assert all(isinstance(s, vectors.VectorStore) for s in vector_stores)
    milvus, qdrant, memory = vector_stores
    clean_milvus(milvus.client)
    try:
        summary = _model(db, lake)
        name = collection_name(VERSION)

        # the publish steps, unchanged: the memory store is simply one more mirror
        out = publish.publish(db, root, summary, *vector_stores, index=mv.IndexSpec("HNSW", "IP"))
        assert set(out["mirror"]) == {"qdrant", "memory"} and out["mirror"]["memory"]["rows"] == 120
        assert out["swap"]["memory_previous"] is None and out["swap"]["qdrant_previous"] is None
        assert {s.kind: s.alias_target(ALIAS) for s in vector_stores} == dict.fromkeys(["milvus", "qdrant",
                                                                                        "memory"], name)
        assert memory.count(name) == milvus.count(name) == qdrant.count(name) == 120
        assert {r.payload["model_version"] for r in memory.scan(name)} == {VERSION}
        # a re-run writes nothing there either
        writes = memory.client.writes
        publish.publish(db, root, summary, *vector_stores, index=mv.IndexSpec("HNSW", "IP"))
        assert memory.client.writes == writes

        # the audit, unchanged: clean, then drift in the memory store only is found and repaired
        ctx = core.AuditContext(db=db, root=root, stores=vector_stores, run_id="clean", examples=1000)
        part = run_scope("als", ctx)
        rows = {k: v for plan in part["plans"] for k, v in plan["before"]["rows"].items()}
        assert rows[f"memory:{name}"] == rows[f"milvus:{name}"] == rows[f"qdrant:{name}"] == 120
        assert sum(plan["before"]["total"] for plan in part["plans"]) == 0

        memory.delete(name, ["t0001", "t0002"])
        memory._rows(name)["zz_orphan"] = ([0.5] * DIM, {"track_id": "zz_orphan", "model_version": VERSION})
        vec, payload = memory._rows(name)["t0003"]
        memory._rows(name)["t0003"] = ([v + 1.0 for v in vec], payload)
        ctx = core.AuditContext(db=db, root=root, stores=vector_stores, run_id="fix", examples=1000)
        part = run_scope("als", ctx, mode="repair", grace_minutes=0)
        items = next(p for p in part["plans"] if p["name"] == "als_items")
        assert items["before"]["counts"] == {f"memory:{name}": {"missing": 2, "orphan": 1, "stale": 1}}
        assert items["after"]["total"] == 0
        acts = {(a["store"], a["action"]): a["count"] for a in items["actions"]}
        assert acts == {(f"memory:{name}", "upsert"): 3, (f"memory:{name}", "delete"): 1}
        assert memory.count(name) == 120 and "zz_orphan" not in memory._rows(name)

        # a lost collection is a structural finding the repair rebuilds through the mirror step
        memory.drop_collection(name)
        part = run_scope("als", core.AuditContext(db=db, root=root, stores=vector_stores, run_id="lost"),
                         mode="repair", grace_minutes=0)
        items = next(p for p in part["plans"] if p["name"] == "als_items")
        assert items["before"]["counts"][f"memory:{name}"] == {"missing": 1} and items["after"]["total"] == 0
        assert memory.count(name) == 120
    finally:
        clean_milvus(milvus.client)
        qd.close_local_clients()  # local mode locks tmp_path/qdrant
        opened.close()
