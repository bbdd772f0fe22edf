"""Benchmark: the store audit's bucketed comparison against a naive load-everything comparison, and
how fast the real embedded stores enumerate.

**Comparison** (synthetic, no store): one expected stream of ``--ids`` (default 1,000,000)
``(id, fingerprint)`` pairs and two store streams (``milvus``-like and ``qdrant``-like), each with
``--drift`` (default 0.1 %) of the ids injected as drift: a third deleted, a third with an altered
fingerprint, a third replaced by orphans. Ids are uuid-shaped, fingerprints look like the ALS ones
(``<version>:<16 hex>``); streams are generated lazily and deterministically, so the generator holds
no memory. Two variants, each in its own subprocess (so each peak RSS is its own):

* ``bucketed``: ``musicrec.audit.engine`` — hash-prefix buckets (count + order-independent checksum),
  a spill to local temp files, only differing buckets compared id by id;
* ``naive``: every side loaded into a dict ``id -> fingerprint``, then compared key by key.

Printed: seconds, ids/s **per store pair** (ids of the expected side × 2 pairs / seconds), peak RSS
(the subprocess's ``ru_maxrss``), both relative to the naive run, and the number of differences
each found (they must be equal). Targets (issue 6): >= 100k ids/s per store pair, peak RSS <= 1/5
of the naive one.

**Enumeration** (real embedded stores, ``--store-ids``, default 100,000): a throw-away
``milvus-lite server`` and a Qdrant local-mode folder are filled with that many ids (dim 64 float32
vectors, payload/fields like the ALS mirror), then enumerated the way the audit does
(``musicrec.vectors.milvus.iter_rows`` with Strong consistency; ``musicrec.vectors.qdrant.iter_points``
scroll), ids only and with vectors. Fill time is printed too (Qdrant local mode is pure Python).

    python bench/audit.py                      # everything: 1M-id comparison + 100k-id enumeration
    python bench/audit.py --skip-stores        # the comparison only
    python bench/audit.py --ids 200000 --store-ids 20000   # quick

Figures are written as JSON to ``bench/results/audit.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

VERSION = "20090505_680693"
PAIRS = ("milvus", "qdrant")
TARGET_IDS_PER_S = 100_000
TARGET_RSS_RATIO = 0.2


# --------------------------------------------------------------------------------------------
# synthetic streams
# --------------------------------------------------------------------------------------------

def _mix(n: int, salt: int) -> int:
    return ((n + salt) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def _uid(n: int) -> str:
    h = f"{_mix(n, 1):016x}{_mix(n, 2):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def expected_stream(ids: int) -> Iterator[tuple[str, str]]:
    for n in range(ids):
        yield _uid(n), f"{VERSION}:{_mix(n, 3):016x}"


def store_stream(ids: int, drift: float, seed: int) -> Iterator[tuple[str, str]]:
    """The expected stream with drift: every ``1/drift``-th id (offset by the store) deleted, altered or
    replaced by an orphan, in turn."""
    step = max(1, round(1 / drift)) if drift > 0 else 0
    for n in range(ids):
        if step and (n + seed * 7) % step == 0:
            kind = (n // step) % 3
            if kind == 0:
                continue  # deleted
            if kind == 1:
                yield _uid(n), f"19990101_000000:{_mix(n, 3):016x}"  # stale
                continue
            yield _uid(n + 10**12 + seed), "orphan:0"  # an orphan in place of the id
            continue
        yield _uid(n), f"{VERSION}:{_mix(n, 3):016x}"


def run_variant(variant: str, ids: int, drift: float) -> dict:
    from musicrec.audit import engine

    t0 = time.perf_counter()
    diffs = {}
    if variant == "bucketed":
        with engine.Side("expected") as exp:
            exp.feed(expected_stream(ids)).finish()
            for seed, store in enumerate(PAIRS, 1):
                with engine.Side(store) as act:
                    act.feed(store_stream(ids, drift, seed)).finish()
                    diffs[store] = sum(1 for _ in engine.diff(exp, act))
    elif variant == "naive":
        want = dict(expected_stream(ids))
        for seed, store in enumerate(PAIRS, 1):
            have = dict(store_stream(ids, drift, seed))
            diffs[store] = sum(1 for k in want.keys() | have.keys() if want.get(k) != have.get(k))
            del have
    else:
        raise SystemExit(f"unknown variant {variant}")
    seconds = time.perf_counter() - t0
    return {"variant": variant, "ids": ids, "drift": drift, "seconds": round(seconds, 3),
            "ids_per_s_per_pair": round(ids * len(PAIRS) / seconds), "differences": diffs,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def in_subprocess(variant: str, ids: int, drift: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--ids", str(ids), "--drift", str(drift)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def idle_rss_mb() -> float:
    """Peak RSS of a subprocess that only imports what the variants import (the floor of both)."""
    code = (f"import resource, sys; sys.path.insert(0, {str(REPO / 'include')!r}); import musicrec.audit.engine; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout), 1)


# --------------------------------------------------------------------------------------------
# real embedded stores
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vectors(n: int, dim: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def bench_milvus(ids: int, dim: int, work: Path) -> dict:
    from musicrec import stores
    from musicrec.audit.core import MILVUS_PAGE
    from musicrec.local import services
    from musicrec.vectors import milvus as mv

    port = _free_port()
    (work / "milvus").mkdir()
    svc = services.Service("milvus-bench", port, [services._bin("milvus-lite"), "server", "--data-dir",
                                                  str(work / "milvus"), "--host", "127.0.0.1", "--port", str(port)],
                           services.milvus_ready)
    pid = services.start(svc, data=work, timeout_s=120)
    try:
        client = stores.vector_store(stores.VectorStoreSettings("milvus", uri=f"http://127.0.0.1:{port}")).client
        name = "music_collection_vbench"
        mv.ensure_collection(client, name, dim)
        t0 = time.perf_counter()
        for start in range(0, ids, 5000):
            n = min(5000, ids - start)
            vecs = _vectors(n, dim, start).tolist()
            client.insert(name, [{"track_id": _uid(start + i), "embedding": vecs[i]} for i in range(n)])
        client.flush(name)
        mv.ensure_index(client, name, mv.IndexSpec("FLAT", "IP"))
        fill = time.perf_counter() - t0
        out = {"store": "milvus-lite server", "ids": ids, "dim": dim, "fill_s": round(fill, 1)}
        for label, fields, page in (("ids_only_page_1000", ["track_id"], 1000),
                                    ("ids_only", ["track_id"], MILVUS_PAGE),
                                    ("with_vectors", ["track_id", "embedding"], MILVUS_PAGE)):
            t0 = time.perf_counter()
            n = sum(1 for _ in mv.iter_rows(client, name, fields, page))
            s = time.perf_counter() - t0
            assert n == ids, (n, ids)
            out[label] = {"seconds": round(s, 2), "ids_per_s": round(n / s)}
        return out
    finally:
        services.stop_pid(pid)


def bench_qdrant(ids: int, dim: int, work: Path) -> dict:
    import warnings

    from qdrant_client import models

    from musicrec import stores
    from musicrec.audit.core import QDRANT_PAGE
    from musicrec.ids import point_id
    from musicrec.vectors import qdrant as qd

    warnings.filterwarnings("ignore")  # local mode warns above 20k points: that is the point here
    client = stores.vector_store(stores.VectorStoreSettings("qdrant", path=str(work / "qdrant"))).client
    try:
        name = "music_collection_vbench"
        qd.ensure_collection(client, name, dim)
        t0 = time.perf_counter()
        for start in range(0, ids, 1000):
            n = min(1000, ids - start)
            keys = [_uid(start + i) for i in range(n)]
            client.upsert(name, points=models.Batch(ids=[point_id(k) for k in keys],
                                                    vectors=_vectors(n, dim, start).tolist(),
                                                    payloads=[{"track_id": k, "model_version": VERSION}
                                                              for k in keys]), wait=True)
        fill = time.perf_counter() - t0
        out = {"store": "qdrant local mode", "ids": ids, "dim": dim, "fill_s": round(fill, 1),
               "fill_points_per_s": round(ids / fill)}
        for label, vectors in (("ids_only", False), ("with_vectors", True)):
            t0 = time.perf_counter()
            n = sum(1 for _ in qd.iter_points(client, name, with_vectors=vectors, batch=QDRANT_PAGE))
            s = time.perf_counter() - t0
            assert n == ids, (n, ids)
            out[label] = {"seconds": round(s, 2), "ids_per_s": round(n / s)}
        return out
    finally:
        qd.close_local_clients()


# --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per store in the comparison")
    parser.add_argument("--drift", type=float, default=0.001, help="fraction of ids drifted per store")
    parser.add_argument("--store-ids", type=int, default=100_000, help="ids per real store for the enumeration")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--skip-stores", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "audit.json")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.ids, args.drift)))
        return

    results: dict = {"load_average": os.getloadavg()}
    print(f"load average {results['load_average'][0]:.2f} (2 cores here: other work skews the figures)")
    if not args.skip_compare:
        floor = idle_rss_mb()
        naive = in_subprocess("naive", args.ids, args.drift)
        bucketed = in_subprocess("bucketed", args.ids, args.drift)
        results["compare"] = {"idle_rss_mb": floor, "naive": naive, "bucketed": bucketed}
        print(f"\n== comparison: {args.ids:,} ids per store, {args.drift:.2%} drift, expected vs {' and '.join(PAIRS)} "
              f"(each variant in its own process; interpreter + imports alone: {floor} MB) ==")
        print(f"{'variant':<10}{'seconds':>9}{'ids/s per pair':>16}{'peak RSS MB':>13}  differences")
        for r in (naive, bucketed):
            print(f"{r['variant']:<10}{r['seconds']:>9.2f}{r['ids_per_s_per_pair']:>16,}{r['peak_rss_mb']:>13.1f}  "
                  f"{r['differences']}")
        speed = bucketed["ids_per_s_per_pair"] / naive["ids_per_s_per_pair"]
        mem = bucketed["peak_rss_mb"] / naive["peak_rss_mb"]
        mem_net = (bucketed["peak_rss_mb"] - floor) / max(1e-9, naive["peak_rss_mb"] - floor)
        same = bucketed["differences"] == naive["differences"]
        results["compare"] |= {"speed_ratio": round(speed, 3), "rss_ratio": round(mem, 3),
                               "rss_ratio_above_idle": round(mem_net, 3), "same_differences": same}
        print(f"bucketed / naive: speed {speed:.2f}x, peak RSS {mem:.3f}x ({mem_net:.3f}x above the idle "
              f"interpreter); same differences: {same}")
        print(f"targets: >= {TARGET_IDS_PER_S:,} ids/s per pair: "
              f"{'met' if bucketed['ids_per_s_per_pair'] >= TARGET_IDS_PER_S else 'MISSED'}; peak RSS <= "
              f"{TARGET_RSS_RATIO} x naive: {'met' if mem <= TARGET_RSS_RATIO else 'MISSED'}")
    if not args.skip_stores:
        work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
        try:
            print(f"\n== enumeration of the real embedded stores: {args.store_ids:,} ids, dim {args.dim} ==")
            results["stores"] = []
            for fn in (bench_milvus, bench_qdrant):
                r = fn(args.store_ids, args.dim, work)
                results["stores"].append(r)
                print(f"{r['store']:<20} fill {r['fill_s']:>7.1f} s ({r['ids'] / r['fill_s']:,.0f} ids/s)   "
                      f"enumerate (the audit's page size) ids only {r['ids_only']['seconds']:>6.2f} s "
                      f"({r['ids_only']['ids_per_s']:>7,} ids/s), with vectors {r['with_vectors']['seconds']:>6.2f} s "
                      f"({r['with_vectors']['ids_per_s']:>7,} ids/s)")
                if "ids_only_page_1000" in r:
                    slow = r["ids_only_page_1000"]
                    print(f"{'':<20} pages of 1,000 rows (pymilvus' default): {slow['seconds']:.2f} s "
                          f"({slow['ids_per_s']:,} ids/s)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
