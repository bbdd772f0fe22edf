"""The change-stream filter and the run's ids from asset events (pure functions, no server)."""

from __future__ import annotations

import pytest

from musicrec.events import stream as cs

SPEC = cs.WatchSpec(name="s", collection="songs", fields=("title", "artist", "lyrics.plain"))


def upd(updated=None, removed=()):
    return {"operationType": "update", "documentKey": {"_id": "x"},
            "updateDescription": {"updatedFields": updated or {}, "removedFields": list(removed)}}


@pytest.mark.parametrize("change,kept", [
    ({"operationType": "insert", "documentKey": {"_id": "x"}}, True),
    ({"operationType": "delete", "documentKey": {"_id": "x"}}, True),
    ({"operationType": "drop"}, False),
    (upd({"title": "t"}), True),
    (upd({"lyrics.plain": "p"}), True),  # MongoDB's report of $set lyrics.plain
    (upd({"lyrics": {"plain": "p"}}), True),  # SecantusDB's report of the same
    (upd({"lyrics": {"sha256": "h", "attempts": 2}}), False),  # SecantusDB: $set of other lyrics fields
    (upd({"lyrics.attempts": 2}), False),
    (upd({"lyrics": "replaced by a string"}), True),  # a whole value over the parent
    (upd({"lyrics": {}}), True),
    (upd(removed=["lyrics"]), True),
    (upd(removed=["plays_7d"]), False),
    (upd({"embedding": {"shard": "x"}, "updated_at": 1}), False),
    (upd({"artistic": 1}), False),  # a prefix of a name is not the field
])
def test_keeps_only_changes_to_watched_fields(change, kept):
    assert SPEC.keeps(change) is kept


def test_pipeline_filters_on_the_server_too():
    stages = SPEC.pipeline()
    assert stages[0] == {"$match": {"operationType": {"$in": ["insert", "update", "replace", "delete"]}}}
    assert any("$objectToArray" in str(s) for s in stages)
    assert cs.WatchSpec(name="s", collection="c", operations=("insert",)).pipeline() == [
        {"$match": {"operationType": {"$in": ["insert"]}}}]


def test_key_field_reads_the_document():
    spec = cs.WatchSpec(name="l", collection="listen_events", operations=("insert",), key="user_id")
    assert spec.id_of({"documentKey": {"_id": "e1"}, "fullDocument": {"user_id": "u1"}}) == "u1"
    assert spec.id_of({"documentKey": {"_id": "e1"}}) is None


def test_bad_specs_are_refused():
    for kwargs in ({"operations": ("drop",)}, {"operations": ()}, {"debounce_s": 5, "max_wait_s": 1},
                   {"max_batch": 0}):
        with pytest.raises(ValueError):
            cs.WatchSpec(name="s", collection="c", **kwargs)


def test_watched_ids_only_for_runs_triggered_by_the_stream_alone(mongo_db):
    ours = {"from_trigger": True, "payload": {"stream": "s", "batch": "b1", "count": 2, "ids": ["a", "b"]}}
    ours2 = {"from_trigger": True, "payload": {"stream": "s", "batch": "b2", "count": 2, "ids": ["b", "c"]}}
    assert cs.watched_ids(mongo_db, [ours, ours2], "s") == ["a", "b", "c"]
    assert cs.watched_ids(mongo_db, [], "s") is None  # scheduled / manual: the full scan
    assert cs.watched_ids(mongo_db, [ours, {}], "s") is None  # another asset's event too
    other = {"from_trigger": True, "payload": {"stream": "other", "batch": "b3", "ids": ["z"]}}
    assert cs.watched_ids(mongo_db, [ours, other], "s") is None
    assert cs.watched_ids(mongo_db, [{"from_trigger": True, "payload": "junk"}], "s") is None
