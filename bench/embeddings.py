"""Benchmark: lyrics embedding throughput of the ``lyrics_embeddings`` path against the raw model.

On the same N lyrics (default 2,000: the plain lyrics of the ``small`` sample's LRCLIB dump, generated
into a temp dir), in the same process, with the model loaded once and warmed up:

* ``raw-encode``: the library's own ``SentenceTransformer.encode(texts, batch_size)`` over the whole
  list (it sorts by length itself) — the baseline;
* ``operator-path``: ``musicrec.embeddings.embed.embed_changed`` — what ``EmbedLyricsOperator``
  delegates to: select the changed songs in MongoDB (SecantusDB), fetch their lyrics, length-sorted
  batches through the same model, Parquet delta parts written, hashed, published and registered.

Target (issue 5): operator-path texts/s >= 0.9 x raw-encode. Then the store writes of the path's
delta: Milvus upsert rows/s (``milvus-lite server``, the hybrid collection: dense + text for BM25),
the three index builds, and the Qdrant local-mode mirror rows/s.

GPU section: BGE-M3 fp16 docs/s at max_length 512 (our batched path and FlagEmbedding's own
``BGEM3FlagModel.encode``) — only when CUDA is available *and* the BGE-M3 weights are on local disk
(``MUSICREC_BGE_M3_PATH`` or the HF cache; nothing is downloaded); otherwise it prints why it skipped.

    python bench/embeddings.py                       # 2,000 lyrics, minilm, batch 32
    python bench/embeddings.py --texts 200           # quick
    python bench/embeddings.py --repeat 2            # interleaved runs, each side's fastest kept

Other processes on the machine skew the figures (2 cores here): the load average is printed. Figures
are written as JSON to ``bench/results/embeddings.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import hashlib
import json
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

TARGET_RATIO = 0.9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_lyrics(tmp: Path, n: int) -> list[dict[str, str]]:
    """Plain lyrics of the ``small`` sample's LRCLIB dump (deterministic, seed 42)."""
    from musicrec.sample import generate

    res = generate(preset="small", out_dir=tmp / "sample", seed=42, with_lrclib=True, with_landing=False)
    con = sqlite3.connect(res.lrclib_dump)
    rows = con.execute("SELECT t.id, t.name, t.artist_name, l.plain_lyrics FROM tracks t JOIN lyrics l "
                       "ON l.id = t.last_lyrics_id WHERE l.plain_lyrics IS NOT NULL AND trim(l.plain_lyrics) != '' "
                       "ORDER BY t.id LIMIT ?", (n,)).fetchall()
    con.close()
    if len(rows) < n:
        print(f"note: the sample holds {len(rows)} lyrics, fewer than {n}")
    return [{"_id": f"bench-{tid}", "title": title, "artist": artist, "plain": plain}
            for tid, title, artist, plain in rows]


def seed_mongo(db, lyrics: list[dict[str, str]]) -> None:
    db["songs"].delete_many({})
    db["songs"].insert_many([{"_id": s["_id"], "title": s["title"], "artist": s["artist"], "plays_total": 1,
                              "lyrics": {"status": "found", "plain": s["plain"],
                                         "sha256": hashlib.sha256(s["plain"].encode()).hexdigest()}}
                             for s in lyrics])


def gpu_section(texts: list[str], batch_size: int) -> dict[str, Any]:
    import torch

    from musicrec.embeddings.encoder import ModelNotFound, load_encoder, resolve

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    try:
        resolve("bge-m3")
    except ModelNotFound as exc:
        return {"skipped": str(exc)}
    enc = load_encoder("bge-m3", "cuda", 512)
    docs = texts * max(1, 10000 // len(texts))  # enough work for the GPU
    enc.encode(docs[:batch_size * 2], batch_size)  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    enc.encode(docs, batch_size)
    torch.cuda.synchronize()
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.flag.encode(docs, batch_size=batch_size, max_length=512, return_dense=True, return_sparse=True)
    torch.cuda.synchronize()
    raw = time.perf_counter() - t0
    return {"device": torch.cuda.get_device_name(0), "docs": len(docs), "batch_size": batch_size, "max_length": 512,
            "fp16": True, "path_docs_per_s": round(len(docs) / ours, 1),
            "flagembedding_encode_docs_per_s": round(len(docs) / raw, 1),
            "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    from musicrec.embeddings.encoder import DEFAULT_MODEL

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--part-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--gpu-batch-size", type=int, default=64)
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "embeddings.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="musicrec-bench-emb-"))
    os.environ["MUSICREC_STAGING_DIR"] = str(tmp / "staging")
    started = False
    try:
        from upath import UPath

        from musicrec import stores
        from musicrec.embeddings import embed, store
        from musicrec.embeddings.encoder import load_encoder
        from musicrec.vectors import qdrant as qd

        lyrics = sample_lyrics(tmp, args.texts)
        texts = [s["plain"] for s in lyrics]
        # the make-run engines (musicrec.local.services) on free ports, with their data in the temp dir
        mport, vport = free_port(), free_port()
        os.environ["MUSICREC_MONGO_PORT"], os.environ["MUSICREC_MILVUS_PORT"] = str(mport), str(vport)
        from musicrec.local import services

        started = True
        for svc in services.services(tmp):
            services.start(svc, tmp)
        mongo = stores.mongo_client(f"mongodb://127.0.0.1:{mport}/")
        db = stores.mongo_database(mongo, "bench")
        seed_mongo(db, lyrics)
        root = UPath(tmp / "lake")

        t0 = time.perf_counter()
        enc = load_encoder(args.model, "auto")
        load_s = time.perf_counter() - t0
        enc.encode(texts[:args.batch_size], args.batch_size)  # warm-up: first-call allocations
        raw_encode = getattr(enc, "raw_encode", None)
        print(f"embeddings bench: {len(texts):,} lyrics (mean {sum(map(len, texts)) / len(texts):.0f} chars), "
              f"model {enc.spec.model_id} on {enc.device} (loaded in {load_s:.1f} s), batch {args.batch_size}, "
              f"load average {os.getloadavg()[0]:.2f}")
        raw_s, path_s, info = [], [], {}
        for i in range(args.repeat):
            if raw_encode is not None:
                t0 = time.perf_counter()
                raw_encode(texts, args.batch_size)
                raw_s.append(time.perf_counter() - t0)
                print(f"  raw-encode     run {i + 1}: {raw_s[-1]:7.2f} s  {len(texts) / raw_s[-1]:7.1f} texts/s")
            t0 = time.perf_counter()
            info = embed.embed_changed(db, root, enc, f"bench{i}", batch_size=args.batch_size,
                                       part_size=args.part_size)
            path_s.append(time.perf_counter() - t0)
            assert info["embedded"] == len(texts), info
            print(f"  operator-path  run {i + 1}: {path_s[-1]:7.2f} s  {len(texts) / path_s[-1]:7.1f} texts/s "
                  f"({info['parts']} parts; encode {info['encode_seconds']:.2f} s)")
        path_tps = len(texts) / min(path_s)
        out: dict[str, Any] = {"measured_at": datetime.now(UTC).isoformat(), "texts": len(texts),
                               "model": enc.spec.model_id, "device": enc.device, "batch_size": args.batch_size,
                               "load_average": os.getloadavg()[0], "path_texts_per_s": round(path_tps, 2)}
        if raw_s:
            raw_tps = len(texts) / min(raw_s)
            ratio = path_tps / raw_tps
            out |= {"raw_texts_per_s": round(raw_tps, 2), "ratio": round(ratio, 3)}
            print(f"operator-path / raw-encode = {ratio:.3f}x  (target >= {TARGET_RATIO}x: "
                  f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")

        run_id = f"bench{len(path_s) - 1}"
        milvus = stores.vector_store(stores.VectorStoreSettings("milvus", uri=f"http://127.0.0.1:{vport}"))
        t0 = time.perf_counter()
        up = embed.upsert_run_milvus(milvus, db, root, info, run_id)
        m_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        embed.build_indexes(milvus, info["collection"])
        idx_s = time.perf_counter() - t0
        qdrant = stores.vector_store(stores.VectorStoreSettings("qdrant", path=str(tmp / "qdrant")))
        t0 = time.perf_counter()
        qup = embed.upsert_run_qdrant(qdrant, db, root, info, run_id)
        q_s = time.perf_counter() - t0
        qd.close_local_clients()
        n_rows = store.milvus_fingerprints(milvus, info["collection"])
        assert len(n_rows) == up["rows"] == qup["rows"] == len(texts)
        out |= {"milvus_upsert_rows_per_s": round(up["rows"] / m_s, 1), "milvus_index_seconds": round(idx_s, 2),
                "qdrant_upsert_rows_per_s": round(qup["rows"] / q_s, 1)}
        print(f"Milvus upsert (hybrid collection, milvus-lite server): {up['rows']:,} rows in {m_s:.2f} s = "
              f"{up['rows'] / m_s:,.0f} rows/s; indexes (HNSW dense + BM25) built and loaded in {idx_s:.2f} s")
        print(f"Qdrant mirror (local mode): {qup['rows']:,} points in {q_s:.2f} s = {qup['rows'] / q_s:,.0f} rows/s")

        gpu = gpu_section(texts, args.gpu_batch_size)
        out["gpu_bge_m3"] = gpu
        if "skipped" in gpu:
            print(f"GPU BGE-M3 fp16 (max_length 512): skipped — {gpu['skipped']}")
        else:
            print(f"GPU BGE-M3 fp16 (max_length 512) on {gpu['device']}: {gpu['path_docs_per_s']:,.0f} docs/s "
                  f"(our path), {gpu['flagembedding_encode_docs_per_s']:,.0f} docs/s (BGEM3FlagModel.encode), "
                  f"{gpu['docs']:,} docs, batch {gpu['batch_size']}, peak {gpu['peak_gpu_mem_gib']} GiB")
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"figures -> {path}")
    finally:
        if started:
            from musicrec.local import services

            services.stop_all(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
