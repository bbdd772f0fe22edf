"""One document the server refuses never fails its batch (or the catalog sync)."""

from __future__ import annotations

from pymongo import UpdateOne

from musicrec.catalog import sync


def test_a_refused_document_does_not_fail_the_batch(mongo_db):
    ops = [UpdateOne({"_id": f"t{i}"}, {"$set": {"n": i}}, upsert=True) for i in range(10)]
    # the server refuses this one: two operators on the same field
    ops.insert(4, UpdateOne({"_id": "bad"}, {"$set": {"n": 1}, "$inc": {"n": 1}}, upsert=True))
    result = sync.SyncResult(anchor="x", trending_days=7, files=0)
    sync._write(mongo_db, "songs", ops, batch_size=100, result=result)
    assert result.write_errors == 1
    assert sorted(d["_id"] for d in mongo_db["songs"].find()) == sorted(f"t{i}" for i in range(10))


def test_song_rows_with_ids_a_store_cannot_hold_are_skipped_and_counted():
    from datetime import UTC, datetime

    row = {"track_id": "x" * 65, "title": "T", "artist": "A", "artist_id": None, "album": None, "duration_s": None,
           "plays_total": 1, "plays_7d": 0, "first_seen_ms": 0, "last_seen_ms": 0}
    ok = dict(row, track_id="good")
    result = sync.SyncResult(anchor="x", trending_days=7, files=0)
    now = datetime(2020, 1, 1, tzinfo=UTC)
    ops = sync._song_ops([row, ok], {}, now, now.replace(tzinfo=None), False, result)
    assert [op._filter["_id"] for op in ops] == ["good"]
    assert result.skipped_bad_ids == 1
