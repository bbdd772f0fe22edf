"""The run summary, read from the stores themselves (not from task output)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from musicrec import stores
from musicrec.lake.clean import REASONS
from musicrec.local import services


def _milvus(uri: str):
    """The serving store of the embedded default, through the factory (Qdrant's local folder is left
    alone: a running Airflow may hold it)."""
    return stores.vector_store(stores.VectorStoreSettings("milvus", uri=uri))


def collect(lake: Path, mongo_uri: str) -> dict[str, Any]:
    with stores.mongo_client(mongo_uri, serverSelectionTimeoutMS=3000) as client:
        db = stores.mongo_database(client)
        parts = list(db["lake_partitions"].find({"_id": {"$regex": "^listens/"}}, {"rows": 1, "date": 1}))
        profiles = db["lake_partitions"].find_one({"_id": "profiles/users.parquet"})
    reasons: Counter[str] = Counter()
    quarantine_root = lake / "quarantine"
    if quarantine_root.exists():
        for f in sorted(quarantine_root.rglob("*.parquet")):
            for reason, count in Counter(pq.read_table(f, columns=["reason"]).column("reason").to_pylist()).items():
                reasons[reason] += count
    dates = sorted(p["date"] for p in parts)
    return {
        "listens_rows": sum(p["rows"] for p in parts),
        "partitions": len(parts),
        "first_date": dates[0] if dates else None,
        "last_date": dates[-1] if dates else None,
        "profiles": profiles["rows"] if profiles else 0,
        "quarantined": {r: reasons.get(r, 0) for r in REASONS} | {
            r: c for r, c in reasons.items() if r not in REASONS},
    }


METRICS = ("ndcg_at_10", "precision_at_10", "recall_at_10", "coverage", "users")


def collect_models(mongo_uri: str, milvus_uri: str, k: int = 10) -> dict[str, Any]:
    """Catalog counts, the active ALS model and one sample user's top-k (read from the stores)."""
    from musicrec import recommend
    from musicrec.als.publish import active_model
    from musicrec.lyrics.queue import status_counts

    with stores.mongo_client(mongo_uri, serverSelectionTimeoutMS=3000) as client:
        db = stores.mongo_database(client)
        out: dict[str, Any] = {"songs": db["songs"].count_documents({}), "users": db["users"].count_documents({}),
                               "model": active_model(db), "user_id": None, "recommendations": [],
                               "lyrics": status_counts(db)}
        if out["model"] is None:
            return out
        user = db["users"].find_one({f"latent_vectors.{out['model']['_id']}": {"$exists": True}}, {"_id": 1},
                                    sort=[("_id", 1)])
        if user is not None:
            out["user_id"] = user["_id"]
            # the tracks the user played in the model's window are excluded as the publish stored them
            out["recommendations"] = recommend.home(user["_id"], k, db=db, stores=_milvus(milvus_uri))
    return out


def print_models(models: dict[str, Any]) -> None:
    print(f"mongo catalog: {models['songs']:,} songs, {models['users']:,} users")
    print("  lyrics: " + ", ".join(f"{k} {v:,}" for k, v in models["lyrics"].items()))
    doc = models["model"]
    if doc is None:
        print("ALS: no active model")
        return
    window = doc["window"]
    print(f"ALS model {doc['_id']} (active; window {window['start']:%Y-%m-%d} .. {window['end']:%Y-%m-%d}, "
          f"{doc['matrix']['users']} users x {doc['matrix']['items']:,} tracks, {doc['matrix']['nnz']:,} pairs, "
          f"backend {doc['backend']['used']}, {doc['backend']['seconds_per_iteration']} s/iteration)")
    print(f"  {'metric':<17}{'ALS':>10}{'popularity':>12}")
    for name in METRICS:
        als, pop = doc["metrics"]["als"][name], doc["metrics"]["popularity"][name]
        print(f"  {name:<17}{als:>10.4g}{pop:>12.4g}")
    print(f"  lift ndcg@10      {doc['metrics'].get('lift_ndcg_at_10')}x   -> Milvus alias music_collection -> "
          f"{doc['collection']}")
    if models["user_id"]:
        print(f"top-{len(models['recommendations'])} for {models['user_id']} (played tracks excluded):")
        for n, rec in enumerate(models["recommendations"], 1):
            print(f"  {n:>2}. {rec.artist} - {rec.title}   ({rec.score:.3f})")


def collect_lyrics_search(mongo_uri: str, milvus_uri: str, user_id: str | None, k: int = 5) -> dict[str, Any]:
    """The active lyrics embedding model, a hybrid search for three lyric lines of the most played
    embedded song, and the hybrid next-song list for ``user_id`` after that song (issue 5)."""
    from musicrec import recommend
    from musicrec.embeddings import store
    from musicrec.recommend import hybrid

    with stores.mongo_client(mongo_uri, serverSelectionTimeoutMS=3000) as client:
        db = stores.mongo_database(client)
        out: dict[str, Any] = {"model": store.active_model(db), "embedded": db["songs"].count_documents(
            {"embedding": {"$exists": True}})}
        if out["model"] is None:
            return out
        serving = _milvus(milvus_uri)
        out["rows"] = serving.count(out["model"]["collection"])
        song = db["songs"].find_one({"embedding.model_id": out["model"]["model_id"]},
                                    {"title": 1, "artist": 1, "lyrics.plain": 1}, sort=[("plays_total", -1)])
        if song is None:
            return out
        lines = [ln.strip() for ln in song["lyrics"]["plain"].splitlines() if len(ln.split()) >= 3]
        mid = len(lines) // 2
        # three consecutive lines: the sample's lyrics draw on a small vocabulary, and one line alone is
        # often shared by several songs
        out["query"] = " / ".join(lines[mid:mid + 3]) if lines else song["title"]
        out["query_id"] = song["_id"]
        out["query_song"] = f"{song['artist']} - {song['title']}"
        result = hybrid.search(out["query"], k, milvus=serving.client, db=db)
        out["hits"], out["legs"], out["fused_by"] = result.hits, result.legs, result.fused_by
        if user_id:
            try:
                out["next"] = recommend.next_song(user_id, song["_id"], k, db=db, stores=serving)
                out["next_after"] = out["query_song"]
            except recommend.NoRecommendations as exc:
                out["next_error"] = str(exc)
        out["user_id"] = user_id
    return out


def print_lyrics_search(lyrics: dict[str, Any]) -> None:
    doc = lyrics.get("model")
    if doc is None:
        print("lyrics embeddings: no active model")
        return
    print(f"lyrics embeddings: {doc['model_id']} ({doc['dim']}-d, sparse {doc['sparse']}) -> alias "
          f"lyrics_embeddings -> {doc['collection']}: {lyrics.get('rows', 0):,} vectors, "
          f"{lyrics['embedded']:,} songs stamped")
    if "query" in lyrics:
        print(f"hybrid search ({' + '.join(lyrics['legs'])}, RRF by {lyrics['fused_by']}) for "
              f"\"{lyrics['query']}\"  (lines of {lyrics['query_song']}):")
        for n, hit in enumerate(lyrics["hits"], 1):
            mark = "   <- the song the lines come from" if hit.track_id == lyrics.get("query_id") else ""
            print(f"  {n:>2}. {hit.artist} - {hit.title}   ({hit.score:.4f}){mark}")
    if lyrics.get("next"):
        print(f"next songs for {lyrics['user_id']} after {lyrics['next_after']} "
              "(0.6 minmax ALS + 0.4 minmax lyrics similarity):")
        for n, rec in enumerate(lyrics["next"], 1):
            print(f"  {n:>2}. {rec.artist} - {rec.title}   ({rec.score:.3f})")
    elif lyrics.get("next_error"):
        print(f"next songs: {lyrics['next_error']}")


def print_audit(lake: Path) -> dict[str, Any] | None:
    """The newest store_audit report in the lake: its summary table and path."""
    import json

    from musicrec.audit import report

    reports = sorted((lake / "audit").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        print("store audit: no report yet")
        return None
    doc = json.loads(reports[-1].read_text())
    print(f"store audit ({doc['run_id']}): {'clean' if doc['clean'] else str(doc['remaining']) + ' open findings'}")
    for line in report.table(doc).splitlines():
        print("  " + line)
    print(f"  report: {reports[-1].with_name('report.html')}")
    return doc


def print_summary() -> dict[str, Any]:
    lake = services.data_dir() / "lake"
    summary = collect(lake, f"mongodb://127.0.0.1:{services.mongo_port()}/")
    print("\n================ musicrec summary ================")
    print(f"lake: {lake}")
    print(f"  listens rows loaded     {summary['listens_rows']:>10,}")
    print(f"  partitions written      {summary['partitions']:>10,}   ({summary['first_date']} .. "
          f"{summary['last_date']})")
    print(f"  user profiles           {summary['profiles']:>10,}")
    print(f"  rows quarantined        {sum(summary['quarantined'].values()):>10,}")
    for reason, count in summary["quarantined"].items():
        print(f"    {reason:<21} {count:>10,}")
    print(f"mongo: mongodb://127.0.0.1:{services.mongo_port()}/musicrec")
    models = collect_models(f"mongodb://127.0.0.1:{services.mongo_port()}/",
                            f"http://127.0.0.1:{services.milvus_port()}")
    print_models(models)
    summary["models"] = {"active": models["model"]["_id"] if models["model"] else None,
                         "recommendations": len(models["recommendations"])}
    lyrics = collect_lyrics_search(f"mongodb://127.0.0.1:{services.mongo_port()}/",
                                   f"http://127.0.0.1:{services.milvus_port()}", models["user_id"])
    print_lyrics_search(lyrics)
    summary["lyrics_search"] = {"hits": len(lyrics.get("hits", [])), "next_song": len(lyrics.get("next", []))}
    audit = print_audit(lake)
    summary["audit"] = {"clean": audit["clean"], "findings": audit["findings"]} if audit else None
    print("UI: `make airflow` then http://127.0.0.1:8080")
    return summary


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print_summary()
