"""listen_events → lake (issue 18, design §8): events posted to the serving API land in Mongo
``listen_events``; ``listens_daily`` for their day writes them into ``listens/date=D/daily.parquet``
beside the landing files' rows, once per event key however it arrived; re-runs and replays add
nothing; the TTL index on ``received_at`` only covers events the lake holds."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from upath import UPath

from musicrec import registry
from musicrec.events import listens
from musicrec.lake import daily
from musicrec.serve import keys
from musicrec.serve.app import create_app
from musicrec.serve.deps import Services, Settings

pytestmark = pytest.mark.integration

D = date(2009, 5, 5)


@pytest.fixture
def api(mongo_uri, mongo_db, tmp_path):
    settings = Settings(mongo_uri=mongo_uri, mongo_db=mongo_db.name)
    key, _ = keys.create(mongo_db, "ingest", "events")
    with TestClient(create_app(settings, Services(settings))) as http:
        yield lambda evs: http.post("/v1/events", json={"events": evs}, headers={"Authorization": f"Bearer {key}"})


def _rows(lake) -> list[tuple]:
    table = pq.read_table(daily.storage.local_path(lake / "listens" / f"date={D}" / daily.FILE_NAME))
    return [(r["user_id"], r["ts"], r["track_id"], r["action"], r["source"], r["track_name"]) for r in table.to_pylist()]


def test_posted_events_reach_the_lake_once_and_expire_only_after(api, mongo_db, tmp_path):
    lake = UPath(tmp_path / "lake")
    mongo_db["songs"].insert_one({"_id": "t-known", "title": "Known Song", "artist": "Known Artist"})
    posted = [
        {"user_id": "u1", "track_id": "t-known", "ts": "2009-05-05T10:00:00Z", "action": "complete"},
        {"user_id": "u2", "artist": "A", "title": "Song A", "ts": "2009-05-05T11:00:00Z"},
        {"user_id": "u1", "track_id": "t-file", "ts": "2009-05-05T12:00:00Z"},  # also in a landing file
        {"user_id": "u3", "track_id": "t-other-day", "ts": "2009-05-06T01:00:00Z"},  # day D+1: not this run
    ]
    r = api(posted)
    assert r.status_code == 202 and r.json()["accepted"] == 4, r.text
    assert mongo_db[listens.COLLECTION].count_documents({}) == 4

    folder = daily.landing_dir(lake, D)
    folder.mkdir(parents=True)
    landing = [{"user_id": "u1", "track_id": "t-file", "track_name": "From File", "artist_name": "F",
                "ts": "2009-05-05T12:00:00Z", "action": "listen"},
               {"user_id": "u9", "track_name": "Only File", "artist_name": "F", "ts": "2009-05-05T13:00:00Z"}]
    (folder / "a.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(e) for e in landing).encode()))

    first = daily.process_day(lake, D, mongo_db, run_id="r1")
    assert (first["status"], first["rows"], first["listen_events"], first["duplicates"]) == ("loaded", 4, 3, 1)
    rows = _rows(lake)
    at = lambda h: datetime(2009, 5, 5, h, tzinfo=UTC)  # noqa: E731
    assert [(u, ts, t, a, s) for u, ts, t, a, s, _ in rows] == [
        ("u1", at(10), "t-known", "complete", "api"),
        ("u1", at(12), "t-file", "listen", "app"),  # the landing file's row wins the shared event key
        ("u2", at(11), rows[2][2], "listen", "api"),
        ("u9", at(13), rows[3][2], "listen", "app")]
    assert rows[0][5] == "Known Song"  # a track-id-only event takes its title from the catalog
    assert rows[2][2] == mongo_db[listens.COLLECTION].find_one({"user_id": "u2"})["track_id"]

    # the day's events are marked loaded, the other day's is not; the TTL index covers loaded ones only
    loaded = {d["user_id"] + d["track_id"]: d.get(listens.LOADED) for d in mongo_db[listens.COLLECTION].find()}
    assert loaded["u3t-other-day"] is None and sum(v is not None for v in loaded.values()) == 3
    ttl = mongo_db[listens.COLLECTION].index_information()[listens.TTL_INDEX]
    assert ttl["expireAfterSeconds"] == 7 * 86400
    assert ttl["partialFilterExpression"] == {listens.LOADED: {"$exists": True}}

    # a replay through the API and a re-run add nothing: same bytes, registry untouched, first loaded_at kept
    path = lake / "listens" / f"date={D}" / daily.FILE_NAME
    data, doc = path.read_bytes(), registry.get(mongo_db, f"listens/date={D}/daily.parquet")
    assert api(posted[:3]).json()["accepted"] == 3
    assert mongo_db[listens.COLLECTION].count_documents({}) == 4
    again = daily.process_day(lake, D, mongo_db, run_id="r2")
    assert again["rows"] == 4 and again["marked_loaded"] == 0 and path.read_bytes() == data
    assert registry.get(mongo_db, f"listens/date={D}/daily.parquet") == doc
    assert {d["user_id"] + d["track_id"]: d.get(listens.LOADED)
            for d in mongo_db[listens.COLLECTION].find()} == loaded


def test_a_day_with_only_api_events_is_loaded_and_retention_is_a_setting(api, mongo_db, tmp_path, monkeypatch):
    lake = UPath(tmp_path / "lake")
    assert api([{"user_id": "u1", "track_id": "t1", "ts": "2009-05-05T10:00:00Z"}]).json()["accepted"] == 1
    monkeypatch.setenv("MUSICREC_LISTEN_EVENTS_RETENTION_DAYS", "2")
    result = daily.process_day(lake, D, mongo_db, run_id="r1")
    assert (result["status"], result["rows"], result["files"]) == ("loaded", 1, 0)
    info = mongo_db[listens.COLLECTION].index_information()[listens.TTL_INDEX]
    assert info["expireAfterSeconds"] == 2 * 86400
    monkeypatch.setenv("MUSICREC_LISTEN_EVENTS_RETENTION_DAYS", "7")  # a changed setting is applied in place
    daily.process_day(lake, D, mongo_db, run_id="r2")
    assert mongo_db[listens.COLLECTION].index_information()[listens.TTL_INDEX]["expireAfterSeconds"] == 7 * 86400
    assert daily.process_day(lake, D + timedelta(days=1), mongo_db, run_id="r3")["status"] == "no_data"
