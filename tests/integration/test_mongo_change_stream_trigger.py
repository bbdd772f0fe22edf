"""The Airflow event trigger over a MongoDB change stream (issue 18) on the session SecantusDB: what
the triggerer would see — one TriggerEvent per batch with a small payload — for inserts, updates and
deletes filtered by field; a killed trigger restarted after a write made while it was down; a burst
of 5,000 changes in a bounded number of events with every id once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from airflow.triggers.base import BaseEventTrigger

from musicrec.events import stream as cs
from musicrec_airflow.triggers.mongo_change_stream import MongoChangeStreamTrigger

pytestmark = pytest.mark.integration


@pytest.fixture
def conn_id(mongo_uri, mongo_db, monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_MONGO_TRIGGER_TEST",
                       mongo_uri.replace("mongodb://", "mongo://").rstrip("/") + "/" + mongo_db.name)
    return "mongo_trigger_test"


def trigger(conn_id: str, **kwargs) -> MongoChangeStreamTrigger:
    args = {"name": "songs_lyrics", "collection": "songs", "fields": ["title", "artist", "lyrics.plain"],
            "debounce_s": 0.3, "max_wait_s": 2.0, "poll_ms": 50, "mongo_conn_id": conn_id} | kwargs
    return MongoChangeStreamTrigger(**args)


async def collect(trig: MongoChangeStreamTrigger, writes, until) -> list[dict]:
    """Run the trigger like the triggerer does (serialize → re-create → run), write, and cancel it
    once ``until(payloads)`` holds (a killed triggerer: the task is cancelled mid-stream)."""
    classpath, kwargs = trig.serialize()
    assert classpath == "musicrec_airflow.triggers.mongo_change_stream.MongoChangeStreamTrigger"
    fresh = MongoChangeStreamTrigger(**kwargs)
    payloads: list[dict] = []
    done = asyncio.Event()

    async def consume():
        async for event in fresh.run():
            payloads.append(event.payload)
            if until(payloads):
                done.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.7)  # the stream is open
    await writes()
    await asyncio.wait_for(done.wait(), 90)
    await asyncio.sleep(0.2)  # the generator resumed once more: the last event was confirmed taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return payloads


def ids_of(payloads: list[dict]) -> list[str]:
    return [i for p in payloads for i in p["ids"]]


def test_is_an_event_trigger_with_a_small_payload(conn_id, mongo_db):
    t = trigger(conn_id)
    assert isinstance(t, BaseEventTrigger)
    with pytest.raises(ValueError):
        trigger(conn_id, operations=["drop"])

    async def scenario():
        songs = mongo_db["songs"]

        async def writes():
            songs.insert_one({"_id": "s1", "title": "a"})
            songs.insert_one({"_id": "s2", "title": "b"})
            songs.update_one({"_id": "s2"}, {"$set": {"plays_total": 5}})  # not watched
            songs.update_one({"_id": "s1"}, {"$set": {"lyrics.plain": "new words"}})
            songs.update_one({"_id": "s1"}, {"$set": {"lyrics.attempts": 3}})  # not watched
            songs.delete_one({"_id": "s2"})

        payloads = await collect(t, writes, lambda p: len(ids_of(p)) >= 2)
        assert ids_of(payloads) == ["s1", "s2"] and payloads[0]["ops"] == {"insert": 2, "update": 1, "delete": 1}
        assert set(payloads[0]) == {"stream", "batch", "count", "ops", "ids"}

        async def only_ignored_then_one():
            songs.update_one({"_id": "s1"}, {"$set": {"plays_total": 9}})
            songs.update_one({"_id": "s1"}, {"$set": {"artist": "x"}})

        payloads = await collect(t, only_ignored_then_one, lambda p: bool(p))
        assert ids_of(payloads) == ["s1"] and payloads[0]["ops"] == {"update": 1}

    asyncio.run(scenario())


def test_killed_and_restarted_with_a_write_while_down(conn_id, mongo_db):
    async def scenario():
        songs = mongo_db["songs"]
        t = trigger(conn_id, name="resume")

        async def first():
            songs.insert_many([{"_id": f"a{i}", "title": "t"} for i in range(10)])

        before = await collect(t, first, lambda p: len(ids_of(p)) >= 10)
        songs.insert_many([{"_id": f"b{i}", "title": "t"} for i in range(4)])  # while the trigger is down
        songs.update_one({"_id": "a3"}, {"$set": {"title": "new"}})

        async def after():
            songs.insert_one({"_id": "c0", "title": "t"})

        later = await collect(t, after, lambda p: len(ids_of(p)) >= 6)
        assert Counter(ids_of(before)) == Counter(f"a{i}" for i in range(10))
        assert Counter(ids_of(later)) == Counter([f"b{i}" for i in range(4)] + ["a3", "c0"])
        state = mongo_db[cs.STATE].find_one({"_id": "resume"})
        assert state["token"] and mongo_db[cs.BATCHES].count_documents({"stream": "resume", "emitted_at": None}) == 0

    asyncio.run(scenario())


def test_a_burst_of_5000_makes_a_bounded_number_of_events_every_id_once(conn_id, mongo_db):
    async def scenario():
        t = trigger(conn_id, name="burst", debounce_s=0.5, max_wait_s=5.0, max_batch=1000)

        async def burst():
            for start in range(0, 5000, 500):
                mongo_db["songs"].insert_many([{"_id": f"s{i:05d}", "title": "t"} for i in range(start, start + 500)])

        payloads = await collect(t, burst, lambda p: sum(x["count"] for x in p) >= 5000)
        assert 5 <= len(payloads) <= 12
        assert all("ids" not in p and len(repr(p)) < 400 for p in payloads)  # markers, never 1,000 ids
        ids = cs.batch_ids(mongo_db, payloads)
        assert len(ids) == 5000 and set(ids) == {f"s{i:05d}" for i in range(5000)}

    asyncio.run(scenario())
