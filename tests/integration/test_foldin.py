"""Fold-in (issue 18): a user refreshed against the active model's item factors scores like that user's
vector in a full retrain on the same data; new listen events move the user's scores; other model
versions' vectors are never touched."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest
from upath import UPath

from musicrec import recommend
from musicrec.als import foldin, model, publish
from musicrec.als.params import AlsParams
from musicrec.events import listens
from musicrec.lake import reader
from tests.conftest import airflow_dags_test
from tests.integration.test_als_publish import WEEK2

pytestmark = pytest.mark.integration

# a converged retrain (implicit solves each step with a few CG steps, warm-started): fold-in solves exactly
PARAMS = AlsParams(factors=16, iterations=30, cg_steps=8)


@pytest.fixture
def trained(tiny_lake, mongo_db, tmp_path):
    src, docs = tiny_lake
    shutil.copytree(src, tmp_path / "lake")
    root = UPath(tmp_path / "lake")
    mongo_db["lake_partitions"].insert_many([dict(d) for d in docs])
    summary = model.train(root, mongo_db, WEEK2, PARAMS, backend="implicit-cpu", run_id="t")
    mongo_db["models"].update_one({"_id": summary["version"]}, {"$set": {"status": "active"}})
    return mongo_db, root, summary


def factors(root, rel: str, id_col: str) -> dict[str, np.ndarray]:
    t = pq.read_table(reader.local_file(root, rel))
    return {i: np.asarray(v, dtype=np.float64) for i, v in zip(t.column(id_col).to_pylist(),
                                                              t.column("vector").to_pylist(), strict=True)}


def test_fold_in_matches_the_retrain_and_never_mixes_versions(trained):
    db, root, summary = trained
    version = summary["version"]
    users = factors(root, summary["user_factors"], "user_id")
    items = factors(root, summary["item_factors"], "track_id")
    y = np.stack(list(items.values()))
    picked = sorted(users)[:: max(1, len(users) // 12)][:12]
    db["users"].insert_one({"_id": picked[0], "latent_vectors": {"old_version": [1.0, 2.0]}})

    # the publish's user vectors (as its users step writes them): a fold-in must leave them as they are
    publish.write_user_vectors(db, version, picked, np.stack([users[u] for u in picked]).astype(np.float32))
    published = {d["_id"]: d["latent_vectors"][version]
                 for d in db["users"].find({"_id": {"$in": picked}}, {f"latent_vectors.{version}": 1})}
    out = foldin.fold_in(db, root, picked, now=WEEK2)  # the training window's data, nothing newer
    assert out["version"] == version and out["folded"] == len(picked) == out["written"]
    errors = []
    for uid in picked:
        doc = db["users"].find_one({"_id": uid})
        folded = np.asarray(doc["refreshed_vectors"][version])
        assert doc["latent_vectors"][version] == published[uid]  # the published vector is never rewritten
        assert np.array_equal(recommend.user_vector(db, uid, version), folded.astype(np.float32))  # served
        want, got = y @ users[uid], y @ folded
        errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert max(errors) <= 0.05, errors
    assert db["users"].find_one({"_id": picked[0]})["latent_vectors"]["old_version"] == [1.0, 2.0]

    # a re-run on the same data writes nothing (diff writes)
    assert foldin.fold_in(db, root, picked, now=WEEK2)["written"] == 0

    # new listens in listen_events (after the window, not in the lake) move that user's scores up
    uid = picked[1]
    before = np.asarray(db["users"].find_one({"_id": uid})["refreshed_vectors"][version])
    track_ids = list(items)
    unplayed = min(track_ids, key=lambda t: float(items[t] @ before))
    idx = track_ids.index(unplayed)
    ts = WEEK2 + timedelta(hours=2)
    docs = [{"_id": listens.event_id(uid, ts + timedelta(minutes=m), unplayed, "complete"), "user_id": uid,
             "track_id": unplayed, "ts": ts + timedelta(minutes=m), "action": "complete",
             "received_at": datetime.now(UTC)} for m in range(5)]
    docs.append({"_id": "x", "user_id": uid, "track_id": "not-in-the-model", "ts": ts, "action": "listen",
                 "received_at": datetime.now(UTC)})
    db[listens.COLLECTION].insert_many(docs)
    again = foldin.fold_in(db, root, [uid], now=WEEK2 + timedelta(days=1))
    assert again["written"] == 1 and again["unknown_track_events"] == 1
    after = np.asarray(db["users"].find_one({"_id": uid})["refreshed_vectors"][version])
    rank = lambda v: int((y @ v > y[idx] @ v).sum())  # noqa: E731
    assert rank(after) < rank(before)


def test_no_active_model_is_a_clear_error(mongo_db, tmp_path):
    with pytest.raises(foldin.NoActiveModel):
        foldin.fold_in(mongo_db, UPath(tmp_path), ["u1"])


def test_user_refresh_dag_folds_the_named_users(trained, airflow_db, mongo_uri):
    db, root, summary = trained
    uid = sorted(factors(root, summary["user_factors"], "user_id"))[0]
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": root.as_uri(),
           "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + db.name}
    out = airflow_dags_test("user_refresh", {"user_ids": [uid]}, env)
    assert "'folded': 1" in out, out[-3000:]
    assert summary["version"] in db["users"].find_one({"_id": uid})["refreshed_vectors"]
