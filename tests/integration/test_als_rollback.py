"""``musicrec.als.rollback`` (issue 17): back to the retained version and forward again, through publish's
own swap and activate; ``home()`` follows the alias; refusals leave everything where it was."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from upath import UPath

from musicrec import recommend
from musicrec.als import publish, rollback
from musicrec.als.params import ALIAS, collection_name
from tests import ui_data

pytestmark = pytest.mark.integration


@pytest.fixture
def published(mongo_db, tmp_path):
    """OLD then NEW published into two in-memory stores (a serving one and a mirror)."""
    ui_data.register_memory()
    stores = [ui_data.memory_store_of("serving"), ui_data.memory_store_of("mirror")]
    lake = tmp_path / "lake"
    root = UPath(lake)
    ui_data.publish_two(mongo_db, root, lake, *stores)
    mongo_db["songs"].insert_many([{"_id": t, "title": t, "artist": "a"} for t in ui_data.ITEMS])
    yield mongo_db, root, lake, stores
    ui_data.unregister_memory()


def _state(db, stores) -> tuple:
    return (publish.active_model(db)["_id"], [s.alias_target(ALIAS) for s in stores],
            {d["_id"]: d["status"] for d in db["models"].find({}, {"status": 1})})


def _home(db, stores) -> list[str]:
    return [r.track_id for r in recommend.home("u001", 5, db=db, stores=stores, exclude=())]


def _expected_home(db, stores, version: str) -> list[str]:
    """The top 5 by x_u·y_i of ``version``'s own vectors, computed here from the store and the user doc."""
    user = np.asarray(db["users"].find_one({"_id": "u001"})["latent_vectors"][version], np.float32)
    recs = stores[0].fetch(collection_name(version), ui_data.ITEMS, vectors=True)
    scores = sorted(((float(np.dot(user, r.vector)), r.key) for r in recs), reverse=True)
    return [k for _, k in scores[:5]]


def test_back_and_forward(published):
    db, root, _, stores = published
    old, new = ui_data.OLD, ui_data.NEW
    assert rollback.retained(db, stores) == [old] and rollback.default_target(db, stores) == old
    home_new = _home(db, stores)
    assert home_new == _expected_home(db, stores, new)

    out = rollback.rollback(db, root, stores)  # to_version defaults to the retained one
    assert out["changed"] and out["version"] == old and out["previous"] == new
    assert _state(db, stores) == (old, [collection_name(old)] * 2, {old: "active", new: "retired"})
    assert db["models"].find_one({"_id": old})["previous_version"] == new
    assert _home(db, stores) == _expected_home(db, stores, old) != home_new  # items and users flipped together

    # a re-run changes nothing; the new model is now the retained one, and forward is the same move
    assert rollback.rollback(db, root, stores, old)["changed"] is False
    assert rollback.retained(db, stores) == [new]
    rollback.rollback(db, root, stores, new)
    assert _state(db, stores) == (new, [collection_name(new)] * 2, {old: "retired", new: "active"})
    assert _home(db, stores) == home_new


def test_a_kill_between_swap_and_activate_completes_on_rerun(published):
    db, root, _, stores = published
    publish.swap_aliases(stores, ui_data.OLD, ui_data.DIM)  # the swap ran, the activation did not
    rollback.rollback(db, root, stores, ui_data.OLD)
    assert _state(db, stores)[:2] == (ui_data.OLD, [collection_name(ui_data.OLD)] * 2)


@pytest.mark.parametrize("damage, reason", [
    ("unknown", "no ALS model"),
    ("candidate", "never published"),
    ("collection", "is gone from memory"),
    ("artifact", "does not match its sha256"),
    ("registry", "not the one published"),
    ("user_vector", "ALS scope finds model"),
    ("item_vector", "ALS scope finds model"),
])
def test_refusals_leave_everything_in_place(published, damage, reason):
    db, root, lake, stores = published
    target = ui_data.OLD
    if damage == "unknown":
        target = "19990101_000000"
    elif damage == "candidate":
        target = "20090601_cccccc"
        ui_data.model(db, lake, target, datetime(2009, 6, 1, tzinfo=UTC), (0.1, 0.01))
    elif damage == "collection":
        stores[1].drop_collection(collection_name(target))
    elif damage == "artifact":
        path = lake / f"models/als/{target}/item_factors.parquet"
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    elif damage == "registry":
        db["lake_partitions"].update_one({"_id": f"models/als/{target}/user_factors.parquet"},
                                         {"$set": {"sha256": "f" * 64}})
    elif damage == "user_vector":
        db["users"].update_one({"_id": "u002"}, {"$set": {f"latent_vectors.{target}": [9.0] * ui_data.DIM}})
    elif damage == "item_vector":
        stores[0].delete(collection_name(target), ["t0003"])
    before = _state(db, stores)
    with pytest.raises(rollback.RollbackRefused, match=reason):
        rollback.rollback(db, root, stores, target)
    assert _state(db, stores) == before
