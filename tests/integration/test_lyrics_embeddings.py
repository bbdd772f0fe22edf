"""lyrics_embeddings through the library steps the DAG's tasks call, against the embedded engines
(SecantusDB, milvus-lite server, Qdrant local mode): the BGE-M3 path on a tiny random XLM-R, the real
MiniLM for semantic sanity, idempotency, edits, removals, a killed run, bad input, a model switch."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from qdrant_client import QdrantClient
from upath import UPath

from musicrec.embeddings import embed, store
from musicrec.embeddings.encoder import MINILM, Encoded, ModelNotFound, load_encoder, resolve
from musicrec.recommend import hybrid
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd
from tests.integration.test_als_publish import clean_milvus

pytestmark = pytest.mark.integration

LYRICS = {
    "s01": ("Rainy Night", "The Drifters", "I walk alone in the rain tonight\nthe streets are cold and grey"),
    "s02": ("Summer Fire", "Sunbeams", "dancing on the beach under the burning summer sun"),
    "s03": ("Moskva", "Zvezdy", "Привет, как дела, мой друг\nночь над городом"),
    "s04": ("Tokyo", "Neon", "東京の夜は長い 光の中で"),
    "s05": ("Long Song", "Epic", "verse of a very long song that goes on and on\n" * 400),
    "s06": ("Money", "Bankers", "counting all the money in the bank, dollars and coins"),
    "s07": ("Heartbreak", "Lonely Hearts", "you broke my heart and left me crying alone"),
    "s08": ("Blank", "Silence", "   \n  "),
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seed_songs(db, lyrics=LYRICS) -> None:
    docs = []
    for n, (tid, (title, artist, plain)) in enumerate(sorted(lyrics.items())):
        docs.append({"_id": tid, "title": title, "artist": artist, "plays_total": 100 - n,
                     "lyrics": {"status": "found", "plain": plain, "sha256": sha(plain)}})
    docs.append({"_id": "s09", "title": "Nothing", "artist": "Nobody", "plays_total": 1,
                 "lyrics": {"status": "not_found", "plain": None, "sha256": None}})
    docs.append({"_id": "s10", "title": "Instrumental", "artist": "Band", "plays_total": 1,
                 "lyrics": {"status": "instrumental", "plain": None, "sha256": None}})
    db["songs"].insert_many(docs)


def set_lyrics(db, tid: str, plain: str | None, status: str = "found") -> None:
    db["songs"].update_one({"_id": tid}, {"$set": {"lyrics.plain": plain, "lyrics.status": status,
                                                   "lyrics.sha256": sha(plain) if plain else None}})


@pytest.fixture
def env(mongo_db, milvus_uri, tmp_path):
    milvus = mv.connect(milvus_uri)
    clean_milvus(milvus)
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    seed_songs(mongo_db)
    yield mongo_db, UPath(tmp_path / "lake"), milvus, qdrant
    qdrant.close()
    clean_milvus(milvus)


@pytest.fixture(scope="module")
def bge(tiny_bge_m3):
    return load_encoder(f"bge-m3:{tiny_bge_m3}", "cpu")


def run_all(db, root, encoder, milvus, qdrant, run_id: str, **kwargs) -> dict:
    """The DAG's task sequence: embed → Milvus upsert → indexes → Qdrant → activate → stamp → prune."""
    info = embed.embed_changed(db, root, encoder, run_id, **kwargs)
    out = {"embed": info,
           "milvus": embed.upsert_run_milvus(milvus, db, root, info, run_id),
           "index": embed.build_indexes(milvus, info["collection"]),
           "qdrant": embed.upsert_run_qdrant(qdrant, db, root, info, run_id),
           "activate": embed.activate(db, milvus, qdrant, info),
           "stamp": embed.stamp(db, root, info["model_slug"], run_id)}
    out["prune"] = embed.prune(db, milvus, qdrant, info["collection"], info["model_id"])
    return out


def mongo_fingerprints(db) -> dict[str, str]:
    return {d["_id"]: store.fingerprint(d["embedding"]["lyrics_sha256"], d["embedding"]["model_id"])
            for d in db["songs"].find({"embedding": {"$exists": True}})}


def snapshot(db, milvus, qdrant, collection: str) -> dict:
    return {"songs": sorted((d["_id"], str(d.get("embedding"))) for d in db["songs"].find()),
            "registry": sorted((d["_id"], d["sha256"]) for d in db["lake_partitions"].find()),
            "milvus": store.milvus_fingerprints(milvus, collection),
            "qdrant": store.qdrant_fingerprints(qdrant, collection),
            "models": sorted((d["_id"], d["status"]) for d in db["models"].find()),
            "vectors": sorted((r["track_id"], tuple(np.round(r["dense"], 5))) for r in
                              milvus.query(collection, filter="", output_fields=["track_id", "dense"], limit=100))}


def assert_mirrors_agree(db, milvus, qdrant, collection: str) -> dict[str, str]:
    m = store.milvus_fingerprints(milvus, collection)
    assert m == store.qdrant_fingerprints(qdrant, collection) == mongo_fingerprints(db)
    return m


def test_bge_m3_dense_and_sparse_reach_milvus_and_rerun_changes_nothing(env, bge):
    db, root, milvus, qdrant = env
    out = run_all(db, root, bge, milvus, qdrant, "run1")
    info = out["embed"]
    assert (info["sparse"], info["dim"], info["embedded"], info["skipped_empty"]) == (True, 32, 7, 1)
    name = info["collection"]
    assert name == "lyrics_embeddings_bge_m3_tiny_bge_m3" and mv.alias_target(milvus, store.ALIAS) == name
    assert qd.alias_target(qdrant, store.ALIAS) == name
    assert {f: v["index_type"] for f, v in out["index"].items()} == {
        "dense": "HNSW", "sparse": "SPARSE_INVERTED_INDEX", "text_bm25": "SPARSE_INVERTED_INDEX"}
    fps = assert_mirrors_agree(db, milvus, qdrant, name)
    assert set(fps) == set(LYRICS) - {"s08"}
    rows = milvus.query(name, ids=["s03"], output_fields=["sparse", "dense", "text", "model_id"])
    assert rows[0]["sparse"] and len(rows[0]["dense"]) == 32 and "Привет" in rows[0]["text"]
    assert rows[0]["model_id"] == "bge-m3:tiny-bge-m3"
    # the shard the audit reads holds the song's current vector
    shard = db["songs"].find_one({"_id": "s03"})["embedding"]["shard"]
    delta = store.read_delta(root, shard, ["s03"])
    assert np.allclose(store.dense_matrix(delta)[0], rows[0]["dense"], atol=1e-6)
    reg = db["lake_partitions"].find_one({"_id": shard})
    assert (reg["dataset"], reg["producer"]) == ("embeddings/bge_m3_tiny_bge_m3", "lyrics_embeddings")
    doc = store.active_model(db)
    assert (doc["_id"], doc["dim"], doc["sparse"], doc["collection"]) == ("embedding_bge_m3_tiny_bge_m3", 32, True,
                                                                          name)
    # hybrid search fuses the dense, sparse and BM25 legs
    res = hybrid.search("привет друг", 3, milvus=milvus, encoder=bge)
    assert res.legs == ["dense", "sparse", "text_bm25"] and res.hits[0].track_id == "s03"
    assert res.fused_by == "milvus"
    # a server without hybrid_search: the same reciprocal-rank fusion client-side
    class NoHybrid:
        def __init__(self, client):
            self.client = client

        def hybrid_search(self, *args, **kwargs):
            raise NotImplementedError("no hybrid_search here")

        def __getattr__(self, name):
            return getattr(self.client, name)

    fallback = hybrid.search("привет друг", 3, milvus=NoHybrid(milvus), encoder=bge)
    assert fallback.fused_by == "client" and fallback.hits[0].track_id == "s03"
    assert np.allclose([h.score for h in fallback.hits], [h.score for h in res.hits], atol=1e-6)

    before = snapshot(db, milvus, qdrant, name)
    again = run_all(db, root, bge, milvus, qdrant, "run2")
    assert again["embed"]["embedded"] == 0 and again["embed"]["parts"] == 0
    assert again["stamp"]["written"] == 0 and again["prune"]["deleted"] == 0 and again["prune"]["unset"] == 0
    assert snapshot(db, milvus, qdrant, name) == before


def test_edit_reembeds_exactly_that_song_and_removals_leave_both_stores(env, bge):
    db, root, milvus, qdrant = env
    name = run_all(db, root, bge, milvus, qdrant, "run1")["embed"]["collection"]
    first = snapshot(db, milvus, qdrant, name)
    set_lyrics(db, "s02", "dancing in the moonlight, a brand new verse")
    out = run_all(db, root, bge, milvus, qdrant, "run2")
    assert out["embed"]["embedded"] == 1 and out["milvus"]["rows"] == 1 and out["qdrant"]["written"] == 1
    after = snapshot(db, milvus, qdrant, name)
    assert {t for t, _ in after["vectors"]} == {t for t, _ in first["vectors"]}
    diff = {a[0] for a, b in zip(after["vectors"], first["vectors"], strict=True) if a != b}
    assert diff == {"s02"}
    assert db["songs"].find_one({"_id": "s02"})["embedding"]["shard"].startswith("embeddings/bge_m3_tiny_bge_m3/run=run2/")
    assert db["songs"].find_one({"_id": "s01"})["embedding"]["shard"].startswith("embeddings/bge_m3_tiny_bge_m3/run=run1/")
    # lyrics became not_found; a song removed from the catalog
    set_lyrics(db, "s06", None, status="not_found")
    db["songs"].delete_one({"_id": "s07"})
    out = run_all(db, root, bge, milvus, qdrant, "run3")
    assert out["embed"]["embedded"] == 0 and out["prune"]["deleted"] == 2 and out["prune"]["unset"] == 1
    fps = assert_mirrors_agree(db, milvus, qdrant, name)
    assert "s06" not in fps and "s07" not in fps and "embedding" not in db["songs"].find_one({"_id": "s06"})


def test_killed_run_resumes_without_duplicates(env, bge, monkeypatch):
    db, root, milvus, qdrant = env
    calls = {"n": 0}
    real = type(bge).encode

    def dying(self, texts, batch_size=32):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # the worker dies mid-run
        return real(self, texts, batch_size)

    monkeypatch.setattr(type(bge), "encode", dying)
    with pytest.raises(KeyboardInterrupt):
        embed.embed_changed(db, root, bge, "runk", part_size=2)
    assert len(embed.run_parts(db, "bge_m3_tiny_bge_m3", "runk")) == 2  # two parts survived
    monkeypatch.setattr(type(bge), "encode", real)
    out = run_all(db, root, bge, milvus, qdrant, "runk", part_size=2)  # the retry of the same run
    assert out["embed"]["resumed"] == 4 and out["embed"]["embedded"] == 3 and out["embed"]["parts"] == 4
    ids = []
    for rel in embed.run_parts(db, "bge_m3_tiny_bge_m3", "runk"):
        ids += store.read_delta(root, rel).column("track_id").to_pylist()
    assert sorted(ids) == sorted(set(LYRICS) - {"s08"})  # every song once
    assert mv.count(milvus, out["embed"]["collection"]) == 7
    assert_mirrors_agree(db, milvus, qdrant, out["embed"]["collection"])


def test_bad_input(env, bge, monkeypatch, tmp_path):
    db, root, milvus, qdrant = env
    with pytest.raises(ModelNotFound, match=str(tmp_path / "nope")):
        resolve(f"bge-m3:{tmp_path / 'nope'}")
    with pytest.raises(ModelNotFound, match="no-such-dir"):
        resolve(str(tmp_path / "no-such-dir"))
    # the long lyric is truncated by the tokenizer (512 tokens), not an error
    long_text = LYRICS["s05"][2]
    assert len(bge.tokenizer(long_text)["input_ids"]) > bge.max_length
    # a NaN vector is skipped with a count; the rest is written
    real = type(bge).encode

    def nan_for_money(self, texts, batch_size=32):
        enc = real(self, texts, batch_size)
        for i, t in enumerate(texts):
            if "money" in t:
                enc.dense[i] = np.nan
        return Encoded(enc.dense, enc.sparse, enc.seconds)

    monkeypatch.setattr(type(bge), "encode", nan_for_money)
    out = run_all(db, root, bge, milvus, qdrant, "run1")
    assert (out["embed"]["embedded"], out["embed"]["skipped_nan"], out["embed"]["skipped_empty"]) == (6, 1, 1)
    name = out["embed"]["collection"]
    fps = assert_mirrors_agree(db, milvus, qdrant, name)
    assert "s06" not in fps and "s05" in fps
    # a delta of another dimension is refused before anything is written, in both stores
    monkeypatch.setattr(type(bge), "encode", real)
    set_lyrics(db, "s01", "a new verse for the rain")
    info = embed.embed_changed(db, root, bge, "run2")
    part = embed.run_parts(db, info["model_slug"], "run2")[0]
    t = store.read_delta(root, part)
    wrong = store.delta_table([{"track_id": "s01", "title": "", "artist": "", "text": "x", "lyrics_sha256": "y",
                                "model_id": "m"}], np.ones((1, 16), np.float32) / 4.0, [{1: 1.0}], 16)
    with pytest.raises(mv.DimensionMismatch):
        store.upsert_milvus(milvus, name, wrong)
    with pytest.raises(mv.DimensionMismatch):
        store.upsert_qdrant(qdrant, name, wrong)
    assert assert_mirrors_agree(db, milvus, qdrant, name) == fps
    # the edited song and the song skipped for NaN (retried, not marked) are in the next delta
    assert sorted(t.column("track_id").to_pylist()) == ["s01", "s06"]


def test_minilm_paraphrase_ranks_above_unrelated_and_model_switch(env, bge):
    db, root, milvus, qdrant = env
    minilm = load_encoder(MINILM)
    assert (minilm.dim, minilm.has_sparse, minilm.spec.model_id) == (384, False,
                                                                     "sentence-transformers/all-MiniLM-L6-v2")
    enc = minilm.encode(["I walk alone in the rain tonight", "tonight I wander by myself through the rainfall",
                         "quarterly tax accounting spreadsheet"])
    sims = enc.dense @ enc.dense[0]
    assert sims[1] > sims[2] + 0.3
    # a model switch: bge (tiny) first, then MiniLM builds its own collection and takes the alias
    old = run_all(db, root, bge, milvus, qdrant, "run1")["embed"]["collection"]
    out = run_all(db, root, minilm, milvus, qdrant, "run2")
    new = out["embed"]["collection"]
    assert new == "lyrics_embeddings_minilm" and out["embed"]["embedded"] == 7
    assert mv.alias_target(milvus, store.ALIAS) == new and qd.alias_target(qdrant, store.ALIAS) == new
    assert out["activate"]["previous"] == old
    assert {d["_id"]: d["status"] for d in db["models"].find()} == {"embedding_bge_m3_tiny_bge_m3": "retired",
                                                                    "embedding_minilm": "active"}
    assert "sparse" not in {f["name"] for f in milvus.describe_collection(new)["fields"]}
    assert_mirrors_agree(db, milvus, qdrant, new)
    # semantic search through the alias: the paraphrase of s01's lyric finds s01 (dense + BM25 fused)
    res = hybrid.search("wandering by myself in the rainfall at night", 3, milvus=milvus, db=db)
    assert res.legs == ["dense", "text_bm25"] and res.hits[0].track_id == "s01"


def test_next_song_blends_als_and_lyrics_similarity(env):
    """score = 0.6·minmax(ALS) + 0.4·minmax(lyrics similarity) over the union of both candidate sets,
    checked against the formula computed here from the stored vectors (MiniLM: well-separated similarities)."""
    from musicrec import recommend
    from musicrec.als.params import ALIAS as ALS_ALIAS
    from musicrec.als.params import collection_name as als_collection

    db, root, milvus, qdrant = env
    run_all(db, root, load_encoder(MINILM), milvus, qdrant, "run1")
    rng = np.random.default_rng(3)
    items = sorted(set(LYRICS) - {"s08"}) + ["a1", "a2"]  # a1, a2: ALS only (no lyrics vector)
    item_vecs = {t: rng.normal(size=4).astype(np.float32) for t in items}
    als_name = als_collection("1")
    mv.ensure_collection(milvus, als_name, 4)
    milvus.upsert(als_name, [{"track_id": t, "embedding": v.tolist()} for t, v in item_vecs.items()])
    mv.ensure_index(milvus, als_name, mv.IndexSpec("HNSW", "IP"))
    mv.swap_alias(milvus, ALS_ALIAS, als_name)
    user = rng.normal(size=4).astype(np.float32)
    db["users"].insert_one({"_id": "u1", "latent_vectors": {"1": user.tolist()}})  # per-version key (issue 14)

    got = recommend.next_song("u1", "s01", 5, db=db, milvus=milvus, exclude=[])
    session = 0.7 * user + 0.3 * item_vecs["s01"]
    lyr = {r["track_id"]: np.asarray(r["dense"], np.float32)
           for r in milvus.query(store.ALIAS, filter="", output_fields=["track_id", "dense"], limit=100)}
    als = {t: float(session @ v) for t, v in item_vecs.items() if t != "s01"}
    sim = {t: float(lyr["s01"] @ v) for t, v in lyr.items() if t != "s01"}
    lo_a, hi_a, lo_s, hi_s = min(als.values()), max(als.values()), min(sim.values()), max(sim.values())
    want = sorted(((t, 0.6 * (als[t] - lo_a) / (hi_a - lo_a) + 0.4 * ((sim[t] - lo_s) / (hi_s - lo_s) if t in sim
                                                                      else 0.0)) for t in als),
                  key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [r.track_id for r in got] == [t for t, _ in want]
    assert np.allclose([r.score for r in got], [s for _, s in want], atol=1e-4)
    assert got[0].title  # titles from the catalog
    # without the content term: the plain ALS order
    plain = recommend.next_song("u1", "s01", 5, db=db, milvus=milvus, exclude=[], content=False)
    assert [r.track_id for r in plain] == [t for t, _ in sorted(als.items(), key=lambda kv: -kv[1])[:5]]


def test_max_songs_takes_the_most_played_first(env, bge):
    db, root, milvus, qdrant = env
    first = run_all(db, root, bge, milvus, qdrant, "run1", max_songs=3)
    assert first["embed"]["embedded"] == 3
    assert set(mongo_fingerprints(db)) == {"s01", "s02", "s03"}  # plays_total 100, 99, 98
    rest = run_all(db, root, bge, milvus, qdrant, "run2")
    assert rest["embed"]["embedded"] == 4 and rest["stamp"]["written"] == 4
    assert set(assert_mirrors_agree(db, milvus, qdrant, rest["embed"]["collection"])) == set(LYRICS) - {"s08"}


def test_bge_m3_batches_equal_flagembeddings_own_encode(bge):
    """Our batch-by-batch BGE-M3 driver gives what BGEM3FlagModel.encode gives (dense and lexical weights)."""
    texts = [plain for _, _, plain in LYRICS.values() if plain.strip()]
    ours = bge.encode(texts, batch_size=3)
    raw = bge.flag.encode(texts, batch_size=3, max_length=bge.max_length, return_dense=True, return_sparse=True)
    assert np.allclose(ours.dense, raw["dense_vecs"], atol=1e-5)
    for mine, theirs in zip(ours.sparse, raw["lexical_weights"], strict=True):
        assert mine.keys() == {int(k) for k in theirs}
        assert all(abs(mine[int(k)] - float(v)) < 1e-5 for k, v in theirs.items())
