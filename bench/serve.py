"""Benchmark: the serving API under a bounded closed-loop load, against the same calls on the library.

A server is started with ``python -m musicrec.serve`` on a free 127.0.0.1 port over one of:

* the embedded default (``--env data/musicrec.env``, what ``make serve`` uses after ``make run``);
* existing stores (``--mongo-uri/--mongo-db/--milvus-uri``: a published ALS model must be there);
* its own sample (the default): throw-away SecantusDB (in memory) and ``milvus-lite server``, the
  ``small`` sample imported, the catalog synced, an ALS model trained and published, and
  ``--lyrics-songs`` songs given generated lyrics embedded with MiniLM (the lyrics collection).

Then, all traffic to 127.0.0.1, a fixed number of requests, nothing left running:

1. **Load.** Per route (home, next, similar, track, search) and per concurrency (1, 8, 32): ``--requests``
   requests, closed loop (each of the c clients sends its next request when the answer came: httpx,
   asyncio, one process). Printed: requests/s, p50/p95/p99 latency, errors (anything but 2xx), and
   the mean time inside the app from the server's own histogram (``/metrics``; one worker only): the
   rest of a request's latency is the network, uvicorn's HTTP parsing and the client.
2. **Library.** The same calls made in this process on the library behind the routes
   (``musicrec.serve.recs.Recommender``: ``musicrec.recommend.home/next_song``, the similar search,
   the track read, ``hybrid.search``), with c threads: API req/s ÷ library req/s and the p50 difference.
3. **Soak.** ``--soak-s`` (default 60) at concurrency 32 over all routes: errors (must be 0) and the
   server's RSS (psutil, the server and its worker processes) — right after the warm-up, then at the end
   (target: within +10 %).

Targets (issue 16, this 2-core machine): home p99 <= 50 ms at concurrency 8; API >= 0.7x the library;
0 errors in the soak. The client, the server, SecantusDB and milvus-lite share the machine's cores:
the load average is printed with the figures.

    python bench/serve.py                          # own sample, 400 requests per route and level, 60 s soak
    python bench/serve.py --env data/musicrec.env  # over `make run`'s embedded default
    python bench/serve.py --quick                  # smoke: 30 requests, 3 s soak, 40 lyric songs

Figures are written as JSON to ``bench/results/serve.json`` (``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

ROUTES = ("home", "next", "similar", "track", "search")
WORDS = ("rain", "summer night", "heart", "dancing alone", "fire", "tonight", "ocean", "lonely road",
         "city lights", "forever")
TARGET_HOME_P99_MS, TARGET_RATIO, TARGET_RSS = 50.0, 0.7, 0.10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- the stores

def read_env_file(path: Path) -> dict[str, str]:
    """``export K=V`` lines of ``data/musicrec.env`` (shell-quoted values)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


@contextlib.contextmanager
def own_sample(work: Path, lyric_songs: int, seed: int) -> Iterator[dict[str, str]]:
    """Throw-away engines with the ``small`` sample, a published ALS model and a lyrics collection."""
    from upath import UPath

    from musicrec import stores
    from musicrec.als import model, publish
    from musicrec.als.params import AlsParams
    from musicrec.catalog import sync
    from musicrec.embeddings import embed
    from musicrec.embeddings.encoder import DEFAULT_MODEL, load_encoder
    from musicrec.lake import download, importer
    from musicrec.local import services
    from musicrec.sample import generate

    mongo_port, milvus_port = _free_port(), _free_port()
    (work / "milvus").mkdir(parents=True)
    engines = [
        services.Service("bench-mongo", mongo_port, [services._bin("secantusd-py"), "--host", "127.0.0.1", "--port",
                                                     str(mongo_port), "--storage-path", ":memory:", "--log-level",
                                                     "WARNING"], services.mongo_ready),
        services.Service("bench-milvus", milvus_port, [services._bin("milvus-lite"), "server", "--data-dir",
                                                       str(work / "milvus"), "--host", "127.0.0.1", "--port",
                                                       str(milvus_port)], services.milvus_ready)]
    pids = []
    try:
        for svc in engines:
            pids.append(services.start(svc, work))
        settings = {"mongo_uri": f"mongodb://127.0.0.1:{mongo_port}/", "mongo_db": "bench_serve",
                    "milvus_uri": f"http://127.0.0.1:{milvus_port}"}
        t0 = time.monotonic()
        sample = generate(preset="small", out_dir=work / "sample", seed=seed, with_lrclib=False, with_landing=False)
        root = UPath(work / "lake")
        db = stores.mongo_database(stores.mongo_client(settings["mongo_uri"]), settings["mongo_db"])
        download.download(sample.archive.as_uri(), root / "raw" / "small", open_source=UPath)
        importer.clean_raw(root, "small")
        importer.partition_clean(root, "small", db, run_id="bench")
        last = max(d["date"] for d in db["lake_partitions"].find({"_id": {"$regex": "^listens/"}}, {"date": 1}))
        anchor = datetime.fromisoformat(last).replace(tzinfo=UTC) + timedelta(days=1)
        sync.sync_catalog(root, db, anchor)
        summary = model.train(root, db, anchor, AlsParams(factors=64, iterations=15), run_id="bench")
        milvus = stores.vector_store(stores.VectorStoreSettings("milvus", uri=settings["milvus_uri"])).client
        from musicrec.vectors import milvus as mv

        publish.publish(db, root, summary, milvus, index=mv.IndexSpec("HNSW", "IP"))
        print(f"sample: small lake, ALS model {summary['version']} published ({time.monotonic() - t0:.0f} s)")
        if lyric_songs:
            t1 = time.monotonic()
            songs = db["songs"].find({}, {"title": 1}).sort([("plays_total", -1), ("_id", 1)]).limit(lyric_songs)
            for n, s in enumerate(songs):
                plain = "\n".join(f"{WORDS[(n + i) % len(WORDS)]} and {WORDS[(n * 3 + i) % len(WORDS)]} "
                                  f"in the {s.get('title') or 'song'}" for i in range(4))
                db["songs"].update_one({"_id": s["_id"]}, {"$set": {"lyrics": {
                    "status": "found", "plain": plain, "sha256": hashlib.sha256(plain.encode()).hexdigest()}}})
            encoder = load_encoder(DEFAULT_MODEL, "cpu")
            info = embed.embed_changed(db, root, encoder, "bench")
            embed.upsert_run_milvus(milvus, db, root, info, "bench")
            embed.build_indexes(milvus, info["collection"])
            embed.activate(db, milvus, None, info)
            embed.stamp(db, root, info["model_slug"], "bench")
            print(f"sample: {lyric_songs} songs' generated lyrics embedded with {DEFAULT_MODEL} "
                  f"({time.monotonic() - t1:.0f} s)")
        milvus.close()
        db.client.close()
        yield settings
    finally:
        for pid in reversed(pids):
            services.stop_pid(pid)


# ----------------------------------------------------------------------------- the server

@contextlib.contextmanager
def server(env: dict[str, str], workers: int) -> Iterator[tuple[str, Any]]:
    """``python -m musicrec.serve`` on a free port; yields (base URL, psutil.Process)."""
    import httpx
    import psutil

    port = _free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the server, closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "musicrec.serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"],
                            env=os.environ | env | {"PYTHONPATH": str(REPO / "include")},
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(base + "/readyz", timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"the server did not get ready:\n{log.read().decode()[-3000:]}")
            time.sleep(0.3)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def rss_mb(proc) -> float:
    """RSS of the server process and its children (uvicorn's workers)."""
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(Exception):
            total += p.memory_info().rss
    return total / 2**20


# ----------------------------------------------------------------------------- inputs

def inputs(settings: dict[str, str], n: int = 64) -> dict[str, list]:
    """Users of the served model, tracks it holds, search phrases: the requests cycle through them."""
    from musicrec import stores
    from musicrec.als.params import ALIAS, USER_VECTORS, version_of
    from musicrec.vectors import milvus as mv

    db = stores.mongo_database(stores.mongo_client(settings["mongo_uri"]), settings["mongo_db"])
    milvus = stores.vector_store(stores.VectorStoreSettings("milvus", uri=settings["milvus_uri"])).client
    target = mv.alias_target(milvus, ALIAS)
    if target is None:
        raise SystemExit("no ALS model is served (alias music_collection): run `make run` or use the own sample")
    version = version_of(target)
    users = [d["_id"] for d in db["users"].find({f"{USER_VECTORS}.{version}": {"$exists": True}}, {"_id": 1})
             .sort("_id", 1).limit(n)]
    mv.ensure_loaded(milvus, target)
    tracks = [r[mv.ID_FIELD] for r in milvus.query(target, filter="", output_fields=[mv.ID_FIELD], limit=n)]
    milvus.close()
    db.client.close()
    return {"version": version, "users": users, "tracks": tracks, "queries": list(WORDS)}


def api_path(route: str, i: int, inp: dict[str, list]) -> str:
    u, t = inp["users"][i % len(inp["users"])], inp["tracks"][(i * 7) % len(inp["tracks"])]
    return {"home": f"/v1/users/{u}/recommendations?k=10",
            "next": f"/v1/users/{u}/next?track_id={t}&k=10",
            "similar": f"/v1/tracks/{t}/similar?k=10",
            "track": f"/v1/tracks/{t}",
            "search": f"/v1/search?q={inp['queries'][i % len(inp['queries'])]}&k=10"}[route]


TEMPLATES = {"home": "/v1/users/{user_id}/recommendations", "next": "/v1/users/{user_id}/next",
             "similar": "/v1/tracks/{track_id}/similar", "track": "/v1/tracks/{track_id}", "search": "/v1/search"}


def server_seconds(base: str, route: str) -> tuple[float, float]:
    """(sum of seconds, count) of the route in the server's own latency histogram (/metrics): the
    time inside the app, without the network and the client (one worker: one process's counters)."""
    import httpx

    text = httpx.get(base + "/metrics", timeout=30).text
    labels = f'{{method="GET",route="{TEMPLATES[route]}"}}'
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("musicrec_serve_request_seconds_sum" + labels):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("musicrec_serve_request_seconds_count" + labels):
            count = float(line.rsplit(" ", 1)[1])
    return total, count


def library_call(rec, route: str, i: int, inp: dict[str, list]) -> Callable[[], Any]:
    u, t = inp["users"][i % len(inp["users"])], inp["tracks"][(i * 7) % len(inp["tracks"])]
    q = inp["queries"][i % len(inp["queries"])]
    return {"home": lambda: rec.home(u, 10).as_dict(), "next": lambda: rec.next(u, t, 10).as_dict(),
            "similar": lambda: rec.similar(t, 10).as_dict(), "track": lambda: rec.track(t),
            "search": lambda: rec.search(q, 10, "hybrid").as_dict()}[route]


# ----------------------------------------------------------------------------- load

def stats(latencies: list[float], wall: float, errors: int, n: int) -> dict[str, Any]:
    lat = sorted(latencies) or [float("nan")]

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2)

    return {"requests": n, "errors": errors, "req_s": round(n / wall, 1), "p50_ms": pct(0.50),
            "p95_ms": pct(0.95), "p99_ms": pct(0.99), "wall_s": round(wall, 2)}


async def _closed_loop(base: str, headers: dict[str, str], paths: Callable[[int], str], n: int, c: int,
                       until: float | None = None) -> tuple[list[float], int, int, float, list[str]]:
    """c clients, each sending its next request when its answer came, until n were sent (or ``until``)."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    samples: list[str] = []
    counter = iter(range(10**12))
    sent = [0]
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while True:
                i = next(counter)
                if (until is None and i >= n) or (until is not None and time.monotonic() >= until):
                    return
                sent[0] += 1
                started = time.perf_counter()
                try:
                    r = await client.get(paths(i))
                    ok = 200 <= r.status_code < 300
                    if not ok and len(samples) < 5:
                        samples.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    if len(samples) < 5:
                        samples.append(repr(exc))
                latencies.append(time.perf_counter() - started)
                errors[0] += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        wall = time.perf_counter() - t0
    return latencies, errors[0], sent[0], wall, samples


def api_load(base: str, headers: dict[str, str], route: str, inp: dict, n: int, c: int) -> dict[str, Any]:
    lat, errors, sent, wall, samples = asyncio.run(_closed_loop(base, headers, lambda i: api_path(route, i, inp), n, c))
    out = stats(lat, wall, errors, sent)
    if samples:
        out["error_samples"] = samples
    return out


def library_load(rec, route: str, inp: dict, n: int, c: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            library_call(rec, route, i, inp)()
            ok = True
        except Exception:  # noqa: BLE001 - counted, as the API's errors are
            ok = False
        with lock:
            latencies.append(time.perf_counter() - started)
            errors[0] += not ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(c) as pool:
        list(pool.map(one, range(n)))
    return stats(latencies, time.perf_counter() - t0, errors[0], n)


# ----------------------------------------------------------------------------- main

def run(settings: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    from musicrec.serve import keys
    from musicrec.serve.deps import Services, Settings
    from musicrec.serve.recs import Recommender

    env = {"MUSICREC_SERVE_MONGO_URI": settings["mongo_uri"], "MUSICREC_SERVE_MONGO_DB": settings["mongo_db"],
           "MUSICREC_SERVE_MILVUS_URI": settings["milvus_uri"]}
    lib_settings = Settings(mongo_uri=settings["mongo_uri"], mongo_db=settings["mongo_db"],
                            milvus_uri=settings["milvus_uri"])
    services = Services(lib_settings)
    name = f"bench-serve-{os.getpid()}"
    key, _ = keys.create(services.db, name, "read")
    headers = {"Authorization": f"Bearer {key}"}
    inp = inputs(settings)
    routes = [r for r in args.routes if r in ROUTES]
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "model": inp["version"],
                              "workers": args.workers, "requests": args.requests, "concurrency": args.concurrency,
                              "cpus": os.cpu_count(), "load_before": load_average(), "api": {}, "library": {}}
    try:
        with server(env, args.workers) as (base, proc):
            # warm-up: every route a few times (the query encoder loads on the first search)
            for route in routes:
                warm = api_load(base, headers, route, inp, max(10, args.requests // 10), 2)
                if warm["errors"]:
                    raise SystemExit(f"warm-up of {route} failed: {warm.get('error_samples')}")
            result["rss_after_warmup_mb"] = round(rss_mb(proc), 1)
            print(f"server: pid {proc.pid}, {args.workers} worker(s), model {inp['version']}, "
                  f"RSS after warm-up {result['rss_after_warmup_mb']:.0f} MB; load average {load_average()}")
            for route in routes:
                result["api"][route] = {}
                for c in args.concurrency:
                    before = server_seconds(base, route)
                    out = api_load(base, headers, route, inp, args.requests, c)
                    after = server_seconds(base, route)
                    if args.workers == 1 and after[1] > before[1]:
                        out["server_mean_ms"] = round(1000 * (after[0] - before[0]) / (after[1] - before[1]), 2)
                    result["api"][route][c] = out
            # the library, in this process, with the same calls
            rec = Recommender(services)
            for route in routes:
                for i in range(max(10, args.requests // 10)):
                    library_call(rec, route, i, inp)()
                result["library"][route] = {c: library_load(rec, route, inp, args.requests, c)
                                            for c in args.concurrency}
            # the soak: every route in turn at concurrency 32
            if args.soak_s > 0:
                rss_start = rss_mb(proc)
                samples = []
                stop = threading.Event()

                def sample_rss() -> None:
                    while not stop.wait(1.0):
                        samples.append(rss_mb(proc))

                sampler = threading.Thread(target=sample_rss, daemon=True)
                sampler.start()
                lat, errors, sent, wall, err_samples = asyncio.run(_closed_loop(
                    base, headers, lambda i: api_path(routes[i % len(routes)], i // len(routes), inp), 0,
                    args.soak_c, until=time.monotonic() + args.soak_s))
                stop.set()
                sampler.join()
                rss_end = rss_mb(proc)
                base_rss = result["rss_after_warmup_mb"]
                result["soak"] = stats(lat, wall, errors, sent) | {
                    "seconds": args.soak_s, "concurrency": args.soak_c, "rss_start_mb": round(rss_start, 1),
                    "rss_max_mb": round(max(samples or [rss_end]), 1), "rss_end_mb": round(rss_end, 1),
                    "rss_growth_vs_warmup": round(rss_end / base_rss - 1, 4), "error_samples": err_samples}
    finally:
        keys.revoke(services.db, name)
        services.db[keys.COLLECTION].delete_many({"name": name})
        services.close()
    result["load_after"] = load_average()
    return result


def report(res: dict[str, Any]) -> dict[str, Any]:
    """Print the tables; returns the verdicts against the targets."""
    print(f"\nmodel {res['model']}, {res['workers']} server worker(s), {res['requests']} requests per route and "
          f"level, {res['cpus']} CPUs; load average before {res['load_before']}, after {res['load_after']}")
    print(f"{'route':<8}{'c':>4} | {'API req/s':>10}{'p50':>8}{'p95':>8}{'p99':>8}{'err':>5}{'in app':>8} | "
          f"{'lib req/s':>10}{'p50':>8} | {'API/lib':>8}{'Δp50 ms':>9}")
    ratios = {}
    for route, levels in res["api"].items():
        for c, a in levels.items():
            lib = res["library"][route][c]
            ratio = a["req_s"] / lib["req_s"] if lib["req_s"] else float("nan")
            ratios[(route, c)] = ratio
            a["api_over_library"], a["p50_minus_library_ms"] = round(ratio, 3), round(a["p50_ms"] - lib["p50_ms"], 2)
            print(f"{route:<8}{c:>4} | {a['req_s']:>10.1f}{a['p50_ms']:>8.1f}{a['p95_ms']:>8.1f}{a['p99_ms']:>8.1f}"
                  f"{a['errors']:>5}{a.get('server_mean_ms', float('nan')):>8.1f} | {lib['req_s']:>10.1f}{lib['p50_ms']:>8.1f} | {ratio:>8.2f}"
                  f"{a['p50_ms'] - lib['p50_ms']:>9.1f}")
    verdict: dict[str, Any] = {}
    home8 = res["api"].get("home", {}).get(8)
    if home8:
        verdict["home_p99_c8_ms"] = home8["p99_ms"]
        verdict["home_p99_c8_ok"] = home8["p99_ms"] <= TARGET_HOME_P99_MS
    if ratios:
        worst = min(ratios, key=ratios.get)
        verdict["min_api_over_library"] = {"route": worst[0], "c": worst[1], "ratio": round(ratios[worst], 3)}
        at8 = [v for (_, c), v in ratios.items() if c == 8]
        verdict["api_over_library_c8_min"] = round(min(at8), 3) if at8 else None
    verdict["load_errors"] = sum(a["errors"] for lv in res["api"].values() for a in lv.values())
    soak = res.get("soak")
    if soak:
        verdict["soak_errors"] = soak["errors"]
        verdict["soak_rss_ok"] = soak["rss_growth_vs_warmup"] <= TARGET_RSS
        print(f"\nsoak {soak['seconds']:g} s at c={soak['concurrency']}: {soak['requests']} requests, "
              f"{soak['req_s']:.1f} req/s, p50 {soak['p50_ms']:.1f} / p99 {soak['p99_ms']:.1f} ms, "
              f"{soak['errors']} errors; server RSS after warm-up {res['rss_after_warmup_mb']:.0f} MB, soak start "
              f"{soak['rss_start_mb']:.0f}, max {soak['rss_max_mb']:.0f}, end {soak['rss_end_mb']:.0f} MB "
              f"({100 * soak['rss_growth_vs_warmup']:+.1f} % vs after warm-up)")
    print("\ntargets: home p99 <= 50 ms at c=8: "
          f"{verdict.get('home_p99_c8_ms')} ms ({'met' if verdict.get('home_p99_c8_ok') else 'NOT met'}); "
          f"API >= 0.7x library: min at c=8 {verdict.get('api_over_library_c8_min')}, lowest overall "
          f"{verdict.get('min_api_over_library')}; soak errors {verdict.get('soak_errors', 'n/a')}, RSS within "
          f"+10 %: {verdict.get('soak_rss_ok', 'n/a')}")
    return verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", type=Path, help="an env file (data/musicrec.env) naming the stores to serve")
    ap.add_argument("--mongo-uri")
    ap.add_argument("--mongo-db", default="musicrec")
    ap.add_argument("--milvus-uri")
    ap.add_argument("--requests", type=int, help="requests per route and concurrency level (400; quick 30)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the server")
    ap.add_argument("--soak-s", type=float, help="soak seconds (60; quick 3; 0: no soak)")
    ap.add_argument("--soak-c", type=int, default=32)
    ap.add_argument("--lyrics-songs", type=int, help="own sample: songs given lyrics (300; quick 40; 0: no search)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 requests, 3 s soak, 40 lyric songs "
                                                          "(an explicit option wins)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = ap.parse_args()
    for name, full, quick in (("requests", 400, 30), ("soak_s", 60.0, 3.0), ("lyrics_songs", 300, 40)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    with contextlib.ExitStack() as stack:
        if args.env:
            from musicrec.serve.deps import Settings

            s = Settings.from_env(read_env_file(args.env))
            settings = {"mongo_uri": s.mongo_uri, "mongo_db": s.mongo_db, "milvus_uri": s.milvus_uri}
        elif args.mongo_uri and args.milvus_uri:
            settings = {"mongo_uri": args.mongo_uri, "mongo_db": args.mongo_db, "milvus_uri": args.milvus_uri}
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
            settings = stack.enter_context(own_sample(work, args.lyrics_songs, args.seed))
            if not args.lyrics_songs and "search" in args.routes:
                args.routes = [r for r in args.routes if r != "search"]
        res = run(settings, args)
    res["verdict"] = report(res)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str))
    print(f"\nfigures: {args.json}")


if __name__ == "__main__":
    main()
