"""Event-driven lyrics embeddings (issue 18): edits made directly in Mongo reach the change stream on
``songs`` (title/artist/plain lyrics only), and a run given the stream's ids embeds exactly those
songs — an in-place ``lyrics.plain`` edit gets its sha256 recomputed, a title edit is re-embedded
although its lyrics hash did not change — and the stamp and both stores agree afterwards."""

from __future__ import annotations

import asyncio

import pytest

from musicrec import stores
from musicrec.events import stream as cs
from musicrec.recommend import hybrid
from tests.integration.test_lyrics_embeddings import assert_mirrors_agree, bge, env, run_all, sha  # noqa: F401

pytestmark = pytest.mark.integration

SPEC = cs.WatchSpec(name="songs_text", collection="songs", fields=("title", "artist", "lyrics.plain"),
                    debounce_s=0.3, max_wait_s=2.0)


def changed_ids(mongo_uri: str, db, edit) -> list[str]:
    """Open the stream, make the edits, return the ids of the first batch (what the trigger fires)."""
    async def scenario():
        adb = stores.async_mongo_database(mongo_uri, db.name)
        gen = cs.watch_batches(adb, SPEC, poll_ms=50)

        async def later():
            await asyncio.sleep(0.5)
            edit()

        task = asyncio.create_task(later())
        batch = await asyncio.wait_for(gen.__anext__(), 60)
        await cs.mark_emitted(adb, batch)
        await task
        await gen.aclose()
        await adb.client.close()
        return cs.batch_ids(db, [cs.inline_payload(batch)])

    return asyncio.run(scenario())


def test_stream_ids_embed_exactly_the_edited_songs(env, bge, mongo_uri):  # noqa: F811 (imported fixtures)
    db, root, milvus, qdrant = env
    first = run_all(db, root, bge, milvus, qdrant, "run1")
    name = first["embed"]["collection"]

    def edit():
        songs = db["songs"]
        songs.update_one({"_id": "s01"}, {"$set": {"lyrics.plain": "an entirely new verse about zebras"}})  # stale sha
        songs.update_one({"_id": "s02"}, {"$set": {"title": "Winter Ice"}})
        songs.update_one({"_id": "s03"}, {"$set": {"plays_total": 999, "lyrics.attempts": 4}})  # not watched
        songs.update_one({"_id": "s06"}, {"$set": {"embedding.shard": "x"}})  # a stamp: never re-triggers

    ids = changed_ids(mongo_uri, db, edit)
    assert ids == ["s01", "s02"]
    out = run_all(db, root, bge, milvus, qdrant, "run2", track_ids=ids)
    assert out["embed"]["embedded"] == 2 and out["stamp"]["written"] == 2
    s01 = db["songs"].find_one({"_id": "s01"})
    assert s01["lyrics"]["sha256"] == sha("an entirely new verse about zebras") == s01["embedding"]["lyrics_sha256"]
    assert s01["embedding"]["shard"].startswith("embeddings/") and "run=run2" in s01["embedding"]["shard"]
    assert "run=run1" in db["songs"].find_one({"_id": "s04"})["embedding"]["shard"]  # not touched
    texts = {r["track_id"]: r["text"] for r in milvus.query(name, filter='track_id in ["s01", "s02"]',
                                                           output_fields=["track_id", "text"])}
    assert "zebras" in texts["s01"] and texts["s02"].startswith("Winter Ice")
    res = hybrid.search("zebras", 3, milvus=milvus, encoder=bge)
    assert res.hits and res.hits[0].track_id == "s01"
    db["songs"].update_one({"_id": "s06"}, {"$unset": {"embedding.shard": ""}})
    # the scheduled run (no ids) afterwards finds nothing left to embed
    assert run_all(db, root, bge, milvus, qdrant, "run3")["embed"]["embedded"] == 0
    assert_mirrors_agree(db, milvus, qdrant, name)
