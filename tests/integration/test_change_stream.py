"""The change-stream library (issue 18) on the session SecantusDB: filtered batches, resume after
a kill with nothing lost or repeated, a burst in bounded batches, reopening after a stream error."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pymongo.errors import AutoReconnect

from musicrec import stores
from musicrec.events import stream as cs

pytestmark = pytest.mark.integration

SONGS = cs.WatchSpec(name="songs_test", collection="songs", fields=("title", "artist", "lyrics.plain"),
                     debounce_s=0.3, max_wait_s=2.0, max_batch=1000)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def take(db, spec: cs.WatchSpec, until, *, poll_ms: int = 50, confirm: bool = True, **kwargs
               ) -> list[cs.Batch]:
    """Batches until ``until(batches)`` holds, each confirmed handed on (unless ``confirm`` is False:
    a consumer killed before it handed the batch on); then the stream is abandoned (a killed trigger)."""
    out: list[cs.Batch] = []
    gen = cs.watch_batches(db, spec, poll_ms=poll_ms, **kwargs)
    try:
        async for batch in gen:
            out.append(batch)
            if confirm:
                await cs.mark_emitted(db, batch)
            if until(out):
                break
    finally:
        await gen.aclose()
    return out


async def writer_after(delay: float, fn) -> None:
    await asyncio.sleep(delay)
    await fn()


def adb(mongo_uri, mongo_db):
    return stores.async_mongo_database(mongo_uri, mongo_db.name)


def test_insert_update_delete_filtered_by_field(mongo_uri, mongo_db):
    async def scenario():
        db = adb(mongo_uri, mongo_db)
        songs = db["songs"]

        async def writes():
            await songs.insert_one({"_id": "s1", "title": "a", "plays_total": 1})
            await songs.insert_one({"_id": "s2", "title": "b"})
            await songs.update_one({"_id": "s2"}, {"$set": {"plays_total": 5}})  # not a watched field
            await songs.update_one({"_id": "s2"}, {"$set": {"lyrics.attempts": 2}})  # nor this one
            await songs.insert_one({"_id": "s3", "title": "c"})

        task = asyncio.create_task(writer_after(0.5, writes))
        first = await take(db, SONGS, lambda b: sum(len(x.ids) for x in b) >= 3)
        await task
        assert [i for b in first for i in b.ids] == ["s1", "s2", "s3"]

        async def more():
            await songs.update_one({"_id": "s2"}, {"$inc": {"plays_total": 1}})  # ignored
            await songs.update_one({"_id": "s1"}, {"$set": {"lyrics.plain": "new words"}})
            await songs.update_one({"_id": "s3"}, {"$set": {"artist": "x"}})
            await songs.delete_one({"_id": "s2"})
            await songs.replace_one({"_id": "s1"}, {"title": "a2"})

        task = asyncio.create_task(writer_after(0.5, more))
        second = await take(db, SONGS, lambda b: bool(b))
        await task
        assert second[0].ids == ["s1", "s3", "s2"]  # distinct, in arrival order
        assert second[0].ops == {"update": 2, "delete": 1, "replace": 1}
        doc = await db[cs.BATCHES].find_one({"_id": second[0].id})
        assert doc["ids"] == ["s1", "s3", "s2"] and doc["emitted_at"] is not None
        await db.client.close()

    run(scenario())


def test_resume_after_a_kill_loses_nothing_and_repeats_nothing(mongo_uri, mongo_db):
    async def scenario():
        db = adb(mongo_uri, mongo_db)
        songs = db["songs"]
        spec = cs.WatchSpec(name="resume_test", collection="songs", debounce_s=0.2, max_wait_s=1.0, max_batch=5)

        task = asyncio.create_task(writer_after(0.5, lambda: songs.insert_many(
            [{"_id": f"a{i}", "title": "t"} for i in range(12)])))
        seen = await take(db, spec, lambda b: len(b) == 1)  # killed after its first batch (5 ids)
        await task
        assert seen[0].ids == [f"a{i}" for i in range(5)]
        # while it is down: more writes
        await songs.insert_many([{"_id": f"b{i}", "title": "t"} for i in range(3)])
        await songs.update_one({"_id": "a0"}, {"$set": {"title": "changed"}})

        # restarted: every change after the first batch, each once (the update of a0 is a new change);
        # this time killed after taking a batch but before handing it on
        again = await take(db, spec, lambda b: sum(len(x.ids) for x in b) >= 7 + 4, confirm=False)
        ids = [i for b in again for i in b.ids]
        assert Counter(ids) == Counter([f"a{i}" for i in range(5, 12)] + [f"b{i}" for i in range(3)] + ["a0"])
        for b in again[:-1]:
            await cs.mark_emitted(db, b)

        # the batch never handed on comes first at the next start, then only new changes
        await songs.insert_one({"_id": "c0", "title": "t"})
        last = await take(db, spec, lambda b: len(b) == 2)
        assert last[0].id == again[-1].id and last[0].ids == again[-1].ids
        assert last[1].ids == ["c0"]
        await db.client.close()

    run(scenario())


def test_a_burst_of_5000_changes_makes_few_batches_with_every_id_once(mongo_uri, mongo_db):
    async def scenario():
        db = adb(mongo_uri, mongo_db)
        spec = cs.WatchSpec(name="burst_test", collection="songs", debounce_s=0.5, max_wait_s=5.0, max_batch=1000)

        async def burst():
            for start in range(0, 5000, 500):
                await db["songs"].insert_many([{"_id": f"s{i:05d}", "title": "t"} for i in range(start, start + 500)])

        task = asyncio.create_task(writer_after(0.5, burst))
        batches = await take(db, spec, lambda b: sum(len(x.ids) for x in b) >= 5000)
        await task
        ids = [i for b in batches for i in b.ids]
        assert len(ids) == 5000 and set(ids) == {f"s{i:05d}" for i in range(5000)}
        assert 5 <= len(batches) <= 12, [len(b.ids) for b in batches]
        assert all(len(b.ids) <= 1000 for b in batches)
        await db.client.close()

    run(scenario())


class FlakyDb:
    """A database whose first ``fail`` change streams die with a network error after they opened."""

    def __init__(self, db, fail: int) -> None:
        self._db, self.fail, self.opened = db, fail, 0

    def __getitem__(self, name):
        coll = self._db[name]
        outer = self

        class Coll:
            def __getattr__(self, attr):
                return getattr(coll, attr)

            async def watch(self, *args, **kwargs):
                outer.opened += 1
                real = await coll.watch(*args, **kwargs)
                if outer.opened > outer.fail:
                    return real

                class Broken:
                    resume_token = real.resume_token

                    async def __aenter__(self):
                        return self

                    async def __aexit__(self, *exc):
                        await real.close()

                    async def try_next(self):
                        raise AutoReconnect("connection reset (test)")

                return Broken()

        return Coll()


def test_a_stream_error_reopens_from_the_saved_token_with_backoff(mongo_uri, mongo_db):
    async def scenario():
        db = adb(mongo_uri, mongo_db)
        flaky = FlakyDb(db, fail=2)
        errors: list[BaseException] = []
        spec = cs.WatchSpec(name="flaky_test", collection="songs", debounce_s=0.2, max_wait_s=1.0)
        task = asyncio.create_task(writer_after(1.0, lambda: db["songs"].insert_one({"_id": "x", "title": "t"})))
        got = await take(flaky, spec, lambda b: True, on_error=errors.append, backoff_max_s=0.5)
        await task
        assert got[0].ids == ["x"] and len(errors) == 2 and flaky.opened == 3
        await db.client.close()

    run(scenario())


def test_payload_is_small_and_a_marker_resolves_to_the_ids(mongo_db):
    big = cs.Batch(stream="s", id="b1", ids=[f"t{i}" for i in range(500)], token=None, ops={"insert": 500})
    small = cs.Batch(stream="s", id="b2", ids=["x", "t1"], token=None)
    mongo_db[cs.BATCHES].insert_many([big.document(), small.document()])
    p_big, p_small = cs.inline_payload(big), cs.inline_payload(small)
    assert "ids" not in p_big and p_big["count"] == 500 and len(repr(p_big)) < 300
    assert p_small["ids"] == ["x", "t1"]
    assert cs.batch_ids(mongo_db, [p_small, p_big, {"unrelated": 1}, "junk"]) == ["x", "t1"] + [
        f"t{i}" for i in range(500) if i != 1]
    assert cs.mark_served(mongo_db, [p_big, p_small], "run1") == 2
    assert cs.mark_served(mongo_db, [p_big], "run2") == 0
