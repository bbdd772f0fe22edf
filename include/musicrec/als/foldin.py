"""Fold-in: new user vectors against the *active* model's item factors, without a retrain (issue 18).

For each affected user, the same math as one user step of ALS training (:mod:`musicrec.als.backends`,
Hu, Koren & Volinsky 2008) with the model's own params: the user's events from the model window's
start until now — the lake's listens plus ``listen_events`` not yet in the lake, deduped on the
event key (``user_id``, ``ts``, ``track_id``) — summed per track with the model's action ``weights``
(pairs ≤ 0 are no interaction), turned into confidences with the model's ``alpha`` and
``confidence`` kind (:func:`musicrec.als.matrix.confidence`), then solved exactly:

    x_u = (YᵀY + λI + Σ_i (c_ui − 1) y_i y_iᵀ)⁻¹ Σ_i c_ui y_i      (p_ui = 1 on the user's tracks)

where Y are the model's item factors (its lake artifact) and λ its ``regularization``. Tracks the
model does not know carry no factor and are left out (the next retrain learns them). The vector is
written under ``users.refreshed_vectors.<that version>`` (:func:`musicrec.als.publish.write_user_vectors`,
diff writes), which serving prefers to the published ``latent_vectors.<that version>``: a user's vector
always belongs to the model whose item vectors it is scored against, other versions are never
touched, and the published vectors stay as the model's lake artifact has them (the store audit's
truth, and what a roll-back serves again) — a live model is never rewritten in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pymongo.database import Database

from musicrec.als import matrix
from musicrec.als.params import REFRESHED, AlsParams
from musicrec.als.publish import active_model, write_user_vectors
from musicrec.events import listens
from musicrec.lake import reader
from musicrec.lake.storage import LakePath

log = logging.getLogger(__name__)

MODELS = "models"
IN_BATCH = 500  # users per $in / per DuckDB query


class NoActiveModel(RuntimeError):
    """No active ALS model: there are no item factors to fold users into."""


def item_factors(root: LakePath, model: dict[str, Any]) -> tuple[dict[str, int], np.ndarray]:
    """(track id → row, factors) of the model's item-factor artifact in the lake."""
    rel = next((a["path"] for a in model.get("artifacts", []) if a.get("kind") == "item_factors"), None)
    if rel is None:
        raise NoActiveModel(f"model {model['_id']} has no item_factors artifact")
    table = pq.read_table(reader.local_file(root, rel))
    ids = table.column("track_id").to_pylist()
    col = table.column("vector").combine_chunks()
    vecs = np.asarray(col.flatten(), dtype=np.float64).reshape(len(ids), col.type.list_size)
    return {t: i for i, t in enumerate(ids)}, vecs


def user_events(root: LakePath, db: Database, user_ids: Sequence[str], start: datetime, end: datetime
                ) -> list[tuple[str, datetime, str, str]]:
    """(user_id, ts, track_id, action) of the users in [start, end): the lake's deduplicated listens,
    then Mongo ``listen_events`` whose event key the lake does not hold."""
    users = list(dict.fromkeys(user_ids))
    seen: set[tuple[str, datetime, str]] = set()
    out: list[tuple[str, datetime, str, str]] = []
    con, _ = reader.open_span(root, db, start, end)
    try:
        for i in range(0, len(users), IN_BATCH):
            con.register("wanted", pa.table({"user_id": users[i:i + IN_BATCH]}))
            rows = con.execute("SELECT e.user_id, e.ts, e.track_id, e.action FROM events e "
                               "JOIN wanted w USING (user_id)").fetchall()
            con.unregister("wanted")
            for user, ts, track, action in rows:
                ts = reader.utc(ts)
                seen.add((user, ts, track))
                out.append((user, ts, track, action))
    finally:
        con.close()
    for i in range(0, len(users), IN_BATCH):
        for d in db[listens.COLLECTION].find({"user_id": {"$in": users[i:i + IN_BATCH]},
                                              "ts": {"$gte": start, "$lt": end}},
                                             {"user_id": 1, "ts": 1, "track_id": 1, "action": 1}):
            key = (d["user_id"], reader.utc(d["ts"]), d["track_id"])
            if key not in seen:
                seen.add(key)
                out.append((*key, d["action"]))
    return out


def solve_users(weights: sp.csr_matrix, y: np.ndarray, params: AlsParams) -> np.ndarray:
    """One exact ALS user step for every row of ``weights`` (users × model items, summed action weights)."""
    conf = matrix.confidence(weights, params.alpha, params.confidence)
    y64 = y.astype(np.float64)
    base = y64.T @ y64 + params.regularization * np.eye(y64.shape[1])
    out = np.zeros((weights.shape[0], y64.shape[1]), dtype=np.float64)
    for u in range(conf.shape[0]):
        lo, hi = conf.indptr[u], conf.indptr[u + 1]
        idx, c = conf.indices[lo:hi], conf.data[lo:hi].astype(np.float64)
        if not len(idx):
            continue
        yu = y64[idx]
        a = base + (yu.T * (c - 1.0)) @ yu
        out[u] = np.linalg.solve(a, yu.T @ c)
    return out.astype(np.float32)


def fold_in(db: Database, root: LakePath, user_ids: Sequence[str], *, version: str | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """Refresh the users' vectors in the active model (or ``version``); returns small counts (XCom)."""
    started = time.monotonic()
    model = db[MODELS].find_one({"_id": version, "kind": "als"}) if version else active_model(db)
    if model is None:
        raise NoActiveModel(f"no {'ALS model ' + version if version else 'active ALS model'}: nothing to fold into")
    version = model["_id"]
    params = AlsParams.from_conf(model["params"])
    users = sorted({u for u in user_ids if isinstance(u, str) and u})
    if not users:
        return {"version": version, "users": 0, "written": 0, "no_known_tracks": 0}
    index, y = item_factors(root, model)
    start = reader.utc(model["window"]["start"])
    end = now or datetime.now(UTC)
    events = user_events(root, db, users, start, end)

    row = {u: i for i, u in enumerate(users)}
    w: dict[tuple[int, int], float] = {}
    unknown_tracks = 0
    for user, _ts, track, action in events:
        col = index.get(track)
        if col is None:
            unknown_tracks += 1
            continue
        w[(row[user], col)] = w.get((row[user], col), 0.0) + float(params.weights.get(action, 0.0))
    keys = [k for k, v in w.items() if v > 0]
    weights = sp.csr_matrix(([w[k] for k in keys], ([k[0] for k in keys], [k[1] for k in keys])),
                            shape=(len(users), len(index)), dtype=np.float32)
    weights.sum_duplicates()
    vecs = solve_users(weights, y.astype(np.float32), params)
    has = np.diff(weights.indptr) > 0
    ids = [u for u, keep in zip(users, has, strict=True) if keep]
    written = 0
    for i in range(0, len(ids), IN_BATCH):
        rows = np.flatnonzero(has)[i:i + IN_BATCH]
        written += write_user_vectors(db, version, ids[i:i + IN_BATCH], vecs[rows], kind=REFRESHED)
    out = {"version": version, "users": len(users), "folded": len(ids), "written": written,
           "no_known_tracks": int((~has).sum()), "events": len(events), "unknown_track_events": unknown_tracks,
           "seconds": round(time.monotonic() - started, 3)}
    log.info("fold-in into %s: %s", version, out)
    return out


def recent_users(db: Database, since: datetime) -> list[str]:
    """Users with ``listen_events`` received since ``since`` (a manual run's default selection)."""
    return sorted(u for u in db[listens.COLLECTION].distinct("user_id", {"received_at": {"$gte": since}})
                  if isinstance(u, str))


def refresh(db: Database, root: LakePath, user_ids: Sequence[str] | None, *, since: datetime | None = None
            ) -> dict[str, Any]:
    """:func:`fold_in` for ``user_ids``, or (None: a manual or scheduled run) for every user with
    ``listen_events`` received since ``since`` (default: the last 24 hours)."""
    if user_ids is None:
        user_ids = recent_users(db, since or datetime.now(UTC) - timedelta(hours=24))
    return fold_in(db, root, user_ids)
