"""catalog sync (musicrec.catalog) against SecantusDB and a tiny lake: counters equal a direct
recomputation, re-runs write nothing, backfill order does not matter, other DAGs' fields survive."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from musicrec import registry
from musicrec.catalog import sync
from musicrec.lake import reader, schema, storage


@pytest.fixture
def lake(tiny_lake, mongo_db, tmp_path):
    """A private copy of the tiny lake + its registry in this test's database."""
    src, docs = tiny_lake
    dst = tmp_path / "lake"
    shutil.copytree(src / "listens", dst / "listens")
    shutil.copytree(src / "profiles", dst / "profiles")
    mongo_db["lake_partitions"].insert_many([dict(d) for d in docs])
    return UPath(dst)


def _all_events(root: UPath) -> pa.Table:
    tables = []
    for p in sorted(root.rglob("*.parquet"), key=lambda p: p.path):
        if "/listens/" in p.path:
            tables.append(pq.read_table(p.path))
    return pa.concat_tables(tables)


def _expected(events: pa.Table, anchor: datetime, days: int = 7) -> dict[str, dict]:
    """Straight Python over every row: dedupe on (user_id, ts, track_id), count non-skip plays."""
    seen: set = set()
    total: Counter = Counter()
    recent: Counter = Counter()
    first: dict = {}
    last: dict = {}
    for row in events.to_pylist():
        key = (row["user_id"], row["ts"], row["track_id"])
        if key in seen or row["ts"] >= anchor:
            continue
        seen.add(key)
        tid = row["track_id"]
        first[tid] = min(first.get(tid, row["ts"]), row["ts"])
        last[tid] = max(last.get(tid, row["ts"]), row["ts"])
        if row["action"] != "skip":
            total[tid] += 1
            if row["ts"] >= anchor - timedelta(days=days):
                recent[tid] += 1
    return {t: {"plays_total": total[t], "plays_7d": recent[t], "first_seen": first[t].replace(tzinfo=None),
                "last_seen": last[t].replace(tzinfo=None)} for t in first}


def _songs(db) -> dict[str, dict]:
    return {d["_id"]: d for d in db["songs"].find()}


def test_counters_equal_a_direct_recomputation_and_rerun_writes_nothing(lake, mongo_db):
    anchor = registry.resolve_anchor(None, mongo_db)
    res = sync.sync_catalog(lake, mongo_db, anchor)
    expected = _expected(_all_events(lake), anchor)
    songs = _songs(mongo_db)
    assert res.songs == len(expected) == len(songs) == res.songs_inserted
    for tid, exp in expected.items():
        doc = songs[tid]
        assert {k: doc[k] for k in exp} == exp, tid
        assert doc["lyrics"] == {"status": "pending"}
        assert doc["title"] and doc["artist"]
    users = {d["_id"]: d for d in mongo_db["users"].find()}
    profiles = pq.read_table((lake / "profiles" / "users.parquet").path).to_pylist()
    assert set(users) >= {p["user_id"] for p in profiles}
    p0 = profiles[0]
    assert users[p0["user_id"]]["gender"] == p0["gender"] and users[p0["user_id"]]["age"] == p0["age"]

    again = sync.sync_catalog(lake, mongo_db, anchor)
    assert (again.songs_inserted, again.songs_updated, again.songs_zeroed) == (0, 0, 0)
    assert (again.users_inserted, again.users_updated) == (0, 0)
    assert _songs(mongo_db) == songs  # same documents, same updated_at


def test_older_anchor_zeroes_later_songs_and_backfill_order_does_not_matter(lake, mongo_db):
    newest = registry.resolve_anchor(None, mongo_db)
    older = newest - timedelta(days=10)
    events = _all_events(lake)
    # old anchor first, then newest: the final state equals a single run at the newest anchor
    sync.sync_catalog(lake, mongo_db, older)
    exp_old = _expected(events, older)
    songs = _songs(mongo_db)
    assert all(songs[t]["plays_total"] == e["plays_total"] for t, e in exp_old.items())
    sync.sync_catalog(lake, mongo_db, newest)
    after_newest = _songs(mongo_db)
    # now a backfill of the older anchor arrives late: counters stay those of the newest anchor
    res = sync.sync_catalog(lake, mongo_db, older)
    assert res.songs_kept_newer == len(exp_old) and res.songs_zeroed == 0
    assert _songs(mongo_db) == after_newest
    exp_new = _expected(events, newest)
    assert {t: d["plays_total"] for t, d in after_newest.items()} == {t: e["plays_total"] for t, e in exp_new.items()}
    # force recomputes for the older anchor: songs first seen after it get 0
    res = sync.sync_catalog(lake, mongo_db, older, force=True)
    later = set(exp_new) - set(exp_old)
    assert later and res.songs_zeroed == len(later)
    songs = _songs(mongo_db)
    assert all(songs[t]["plays_total"] == 0 and songs[t]["plays_7d"] == 0 for t in later)
    # first/last seen are $min/$max: a run for an older anchor never moves them back
    assert all(songs[t]["last_seen"] == exp_new[t]["last_seen"] for t in exp_new)


def test_other_dags_fields_are_never_touched(lake, mongo_db):
    anchor = registry.resolve_anchor(None, mongo_db)
    sync.sync_catalog(lake, mongo_db, anchor - timedelta(days=3))
    tid = next(iter(_songs(mongo_db)))
    lyr = {"status": "found", "provider": "lrclib", "plain": "la la", "attempts": 1}
    mongo_db["songs"].update_one({"_id": tid}, {"$set": {"lyrics": lyr, "embedding": {"model_id": "m"}}})
    uid = mongo_db["users"].find_one()["_id"]
    mongo_db["users"].update_one({"_id": uid}, {"$set": {"latent_vector": [0.5, 1.0], "model_version": "v"}})
    sync.sync_catalog(lake, mongo_db, anchor)
    doc = mongo_db["songs"].find_one({"_id": tid})
    assert doc["lyrics"] == lyr and doc["embedding"] == {"model_id": "m"}
    user = mongo_db["users"].find_one({"_id": uid})
    assert user["latent_vector"] == [0.5, 1.0] and user["model_version"] == "v"


def test_duplicates_across_files_of_a_partition_count_once(lake, mongo_db, tmp_path):
    """A daily file repeating the import's events for a day (same keys) adds nothing."""
    day_doc = registry.listens_partitions(mongo_db)[-1]
    table = pq.read_table((lake / day_doc["_id"]).path)
    extra = table.slice(0, 5).to_pylist()
    extra.append(dict(extra[0], ts=extra[0]["ts"] + timedelta(seconds=1), action="complete"))  # one new event
    local = tmp_path / "daily.parquet"
    pq.write_table(pa.Table.from_pylist(extra, schema=schema.LISTENS), local)
    rel = f"listens/date={day_doc['date']}/daily.parquet"
    info = storage.publish_file(local, lake / rel)
    registry.record(mongo_db, [registry.PartitionRecord(rel, "landing", day_doc["date"], "daily", len(extra),
                                                        info.bytes, info.sha256, "t")])
    anchor = registry.resolve_anchor(None, mongo_db)
    sync.sync_catalog(lake, mongo_db, anchor)
    expected = _expected(_all_events(lake), anchor)
    songs = _songs(mongo_db)
    assert {t: songs[t]["plays_total"] for t in expected} == {t: e["plays_total"] for t, e in expected.items()}
    con, docs = reader.open_span(lake, mongo_db, None, anchor)
    n = con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert n == len({(r["user_id"], r["ts"], r["track_id"]) for r in _all_events(lake).to_pylist()})
    assert any(d["_id"] == rel for d in docs)


def test_empty_lake_is_a_clear_no_op(mongo_db, tmp_path):
    res = sync.sync_catalog(UPath(tmp_path), mongo_db, datetime(2009, 5, 5, tzinfo=UTC))
    assert res.files == 0 and res.songs == 0 and mongo_db["songs"].count_documents({}) == 0
    with pytest.raises(ValueError, match="trending_days"):
        sync.sync_catalog(UPath(tmp_path), mongo_db, datetime(2009, 5, 5, tzinfo=UTC), trending_days=0)


def test_run_anchor_by_run_type(lake, mongo_db):
    from types import SimpleNamespace

    from musicrec_airflow.anchor import run_anchor

    newest = datetime(2009, 5, 5, tzinfo=UTC)
    past, future = datetime(2009, 4, 20, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)

    def ctx(run_type, end, logical=True):
        return {"dag_run": SimpleNamespace(run_type=run_type), "data_interval_end": end,
                "logical_date": end if logical else None}

    assert run_anchor(ctx("scheduled", future), mongo_db) == future  # the interval it owns, even if empty
    assert run_anchor(ctx("backfill", past), mongo_db) == past
    assert run_anchor(ctx("manual", future), mongo_db) == newest  # "now" = all data there is
    assert run_anchor(ctx("manual", past), mongo_db) == past
    assert run_anchor(ctx("asset_triggered", future), mongo_db) == newest
    assert run_anchor(ctx("manual", None, logical=False), mongo_db) == newest
