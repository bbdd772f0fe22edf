"""Benchmark: how fast changes made in Mongo reach the indexes through Airflow (issue 18).

Runs against a running ``airflow standalone`` on the embedded default (``make airflow``: scheduler,
triggerer, dag-processor) with ``lyrics_embeddings`` and ``user_refresh`` unpaused and an active ALS
model and lyrics collection (``make run`` made them). Nothing is triggered by hand:

* **lyrics**: the plain lyrics of 20 embedded songs are edited one by one (a unique nonce phrase);
  each edit is timed until ``hybrid.search`` of the phrase returns the song;
* **listens**: for 20 users with a vector in the active model, 20 ``complete`` listens of a track
  outside their home list are stored in ``listen_events`` (the serving API's own check + store); each is
  timed until the user's ``home()`` list changes.

Printed: p50/p95 per kind, the DAG runs made meanwhile (REST API), and where the time goes: until the
change stream closed its batch (``stream_batches.created_at``: the stream's poll + debounce), until
the run was queued and started (scheduling), and the run itself (task start + work), from the runs'
``queued_at``/``start_date``/``end_date``.

    python bench/freshness.py                      # AIRFLOW_CONN_* from the environment, else the embedded default's
    python bench/freshness.py --n 5 --timeout 180  # quick

Edits are undone afterwards (original lyrics restored, the bench's events deleted; the restore itself
is a change and is embedded again by the next run).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include")]

from musicrec import stores  # noqa: E402
from musicrec.embeddings import store  # noqa: E402
from musicrec.events import stream as cs  # noqa: E402
from musicrec.local import envfile, keys  # noqa: E402
from musicrec.recommend import home, hybrid  # noqa: E402
from musicrec.serve import events  # noqa: E402


def load_env() -> None:
    """The embedded default's settings (what ``data/musicrec.env`` holds for ``make airflow``), without
    overriding the environment: a production run exports its own ``AIRFLOW_CONN_*``."""
    for key, value in envfile.embedded_env(REPO).items():
        os.environ.setdefault(key, value)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Api:
    def __init__(self, url: str, data: Path) -> None:
        import httpx

        self.url, self.http = url.rstrip("/"), httpx.Client(timeout=30)
        tok = self.http.post(f"{self.url}/auth/token",
                             json={"username": keys.ADMIN_USER, "password": keys.admin_password(data)}).json()
        self.http.headers["Authorization"] = f"Bearer {tok['access_token']}"

    def runs(self, dag_id: str, since: datetime) -> list[dict[str, Any]]:
        out = self.http.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns",
                            params={"limit": 100, "order_by": "-run_after"}).json().get("dag_runs", [])
        return [r for r in out if (r.get("run_after") or "") >= since.isoformat()]


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def breakdown(db, api: Api | None, dag_id: str, stream: str, t_change: datetime, t_done: datetime
              ) -> dict[str, float]:
    """Seconds from the change to: the stream's batch, the run's queueing, its start, its end."""
    out: dict[str, float] = {}
    batch = db[cs.BATCHES].find_one({"stream": stream, "created_at": {"$gte": t_change.replace(tzinfo=None)}},
                                    sort=[("created_at", 1)])
    if batch:
        out["batch"] = (batch["created_at"].replace(tzinfo=UTC) - t_change).total_seconds()
    if api:
        # the first asset-triggered run queued after the change (an earlier run still going when the
        # change came does not serve it: its events were taken before)
        runs = [r for r in api.runs(dag_id, t_change - timedelta(minutes=5))
                if r["run_type"] == "asset_triggered" and ts(r.get("queued_at")) and ts(r["queued_at"]) >= t_change
                and ts(r["queued_at"]) <= t_done]
        if runs:
            r = min(runs, key=lambda r: r["queued_at"])
            for key, field in (("queued", "queued_at"), ("started", "start_date"), ("ended", "end_date")):
                if ts(r.get(field)):
                    out[key] = (ts(r[field]) - t_change).total_seconds()
    return out


def bench_lyrics(db, milvus, n: int, timeout: float, api: Api | None) -> tuple[list[float], list[dict]]:
    songs = list(db["songs"].find({"lyrics.status": "found", "embedding": {"$exists": True}},
                                  {"lyrics.plain": 1}).sort("plays_total", -1).limit(n))
    times, parts = [], []
    try:
        for s in songs:
            phrase = " ".join(f"zq{uuid.uuid4().hex[:8]}" for _ in range(3))
            t0, t_change = time.monotonic(), datetime.now(UTC)
            db["songs"].update_one({"_id": s["_id"]}, {"$set": {"lyrics.plain": f"{phrase}\n{s['lyrics']['plain']}"}})
            # searchable: the served index holds the new text and a hybrid search for the nonce phrase
            # returns the song. Not "ranks it first": only the BM25 leg can match made-up words, and under
            # RRF its rank 1 ties with the dense leg's rank 1 (some other song), so first place is a coin
            # toss, not freshness; and the dense leg alone may return the song before the edit is indexed.
            while time.monotonic() - t0 < timeout:
                rows = milvus.query(store.ALIAS, filter=f'{store.ID_FIELD} == "{s["_id"]}"', output_fields=["text"])
                if rows and phrase in rows[0]["text"]:
                    res = hybrid.search(phrase, 5, milvus=milvus, db=db)
                    if any(h.track_id == s["_id"] for h in res.hits):
                        break
                time.sleep(0.5)
            took = time.monotonic() - t0
            times.append(took)
            parts.append(breakdown(db, api, "lyrics_embeddings", "songs_text", t_change, datetime.now(UTC)))
            print(f"  lyrics {s['_id']}: {took:.1f} s {parts[-1]}", flush=True)
    finally:
        for s in songs:
            plain = s["lyrics"]["plain"]
            db["songs"].update_one({"_id": s["_id"]}, {"$set": {"lyrics.plain": plain,
                                                                "lyrics.sha256": hashlib.sha256(plain.encode()).hexdigest()}})
    return times, parts


def bench_listens(db, milvus, n: int, timeout: float, api: Api | None) -> tuple[list[float], list[dict]]:
    from musicrec.recommend import serving_model

    version, _ = serving_model(milvus)
    users = [d["_id"] for d in db["users"].find({f"latent_vectors.{version}": {"$exists": True}}, {"_id": 1}).limit(n)]
    times, parts, ids = [], [], []
    try:
        for user in users:
            before = [r.track_id for r in home(user, 10, db=db, milvus=milvus, exclude=set())]
            track = next(d["_id"] for d in db["songs"].find({}, {"_id": 1}).sort("plays_total", 1)
                         if d["_id"] not in before)
            now = datetime.now(UTC)
            docs = [events.check({"user_id": user, "track_id": track, "action": "complete",
                                  "ts": (now - timedelta(seconds=60 - i)).isoformat()}).doc for i in range(20)]
            ids += [d["_id"] for d in docs]
            t0, t_change = time.monotonic(), datetime.now(UTC)
            events.store(db, docs)
            while time.monotonic() - t0 < timeout:
                if [r.track_id for r in home(user, 10, db=db, milvus=milvus, exclude=set())] != before:
                    break
                time.sleep(0.5)
            took = time.monotonic() - t0
            times.append(took)
            parts.append(breakdown(db, api, "user_refresh", "listen_users", t_change, datetime.now(UTC)))
            print(f"  listens {user}: {took:.1f} s {parts[-1]}", flush=True)
    finally:
        for i in range(0, len(ids), 500):
            db[events.COLLECTION].delete_many({"_id": {"$in": ids[i:i + 500]}})
    return times, parts


def summary(name: str, times: list[float], parts: list[dict]) -> None:
    print(f"{name}: n={len(times)} p50={pct(times, 0.5):.1f} s p95={pct(times, 0.95):.1f} s max={max(times or [0]):.1f} s")
    for key in ("batch", "queued", "started", "ended"):
        vals = [p[key] for p in parts if key in p]
        if vals:
            print(f"  median seconds to {key:8s}: {statistics.median(vals):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--api-url", default=os.environ.get("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--data", type=Path, default=REPO / "data", help="the embedded default's data dir (admin password)")
    ap.add_argument("--skip", choices=["lyrics", "listens"], action="append", default=[])
    args = ap.parse_args()
    load_env()
    mongo_uri, mongo_db = stores.mongo_from_conn(os.environ.get("AIRFLOW_CONN_MONGO_DEFAULT"))
    milvus_settings = stores.milvus_from_conn(os.environ.get("AIRFLOW_CONN_MILVUS_DEFAULT"))
    if not mongo_uri or not milvus_settings:
        sys.exit("AIRFLOW_CONN_MONGO_DEFAULT and AIRFLOW_CONN_MILVUS_DEFAULT must be set "
                 "(the embedded default sets them: make run first)")
    db = stores.mongo_database(mongo_uri, mongo_db)
    from musicrec.vectors import milvus as mv

    milvus = mv.connect(milvus_settings.uri)
    try:
        api: Api | None = Api(args.api_url, args.data)
    except Exception as exc:  # counts and the breakdown of runs are optional
        print(f"(no REST API at {args.api_url}: {exc}; DAG runs not counted)")
        api = None
    started = datetime.now(UTC)
    if "lyrics" not in args.skip:
        summary("lyrics edit → searchable", *bench_lyrics(db, milvus, args.n, args.timeout, api))
    if "listens" not in args.skip:
        summary("listens → home changed", *bench_listens(db, milvus, args.n, args.timeout, api))
    if api:
        for dag_id in ("lyrics_embeddings", "user_refresh", "lyrics_enrichment"):
            runs = api.runs(dag_id, started)
            print(f"DAG runs of {dag_id}: {len(runs)} ({sum(r['run_type'] == 'asset_triggered' for r in runs)} "
                  "asset-triggered)")


if __name__ == "__main__":
    main()
