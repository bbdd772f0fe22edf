"""ALS training run: window → matrix → evaluate (vs popularity) → train → artifacts → model document.

Artifacts go to ``models/als/<version>/`` (one writer, atomic replace) and are recorded in
``lake_partitions`` with their sha256; the ``models`` document (design §4) is written with status
``candidate``. The version is named by its inputs (``AlsParams.version``: params, window and the
registry sha256 of every input file), so a re-run on the same inputs reuses the artifacts already
published (nothing retrained, nothing rewritten) and changed inputs make a new version. A version that
is ``active`` or ``retired`` is never written again (:class:`ImmutableVersion`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pymongo.database import Database

from musicrec import registry
from musicrec import scratch as scratch_dirs
from musicrec.als import backends, evaluate, matrix
from musicrec.als.params import AlsParams, collection_name
from musicrec.lake import reader, schema, storage
from musicrec.lake.storage import LakePath

log = logging.getLogger(__name__)

MODELS = "models"
PRODUCER = "als_training"
USER_FACTORS, ITEM_FACTORS, METRICS = "user_factors.parquet", "item_factors.parquet", "metrics.json"


def model_dir(version: str) -> str:
    return f"models/als/{version}"


def code_version() -> str:
    """The git commit of this code (``MUSICREC_CODE_VERSION`` wins, e.g. set by the image build)."""
    env = os.environ.get("MUSICREC_CODE_VERSION")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except Exception:
        return "unknown"


def factors_table(ids: np.ndarray, vectors: np.ndarray, id_col: str) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table({id_col: pa.array(list(ids), type=pa.string()),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})


def window_of(anchor: datetime, params: AlsParams) -> tuple[datetime, datetime]:
    end = reader.utc(anchor)
    return end - timedelta(days=params.window_days), end


def plan(db: Database, anchor: datetime, params: AlsParams) -> dict[str, Any]:
    """The run's window, version and inputs (small: goes to XCom)."""
    start, end = window_of(anchor, params)
    docs = reader.span_partitions(db, start, end)
    inputs = [{"path": d["_id"], "sha256": d.get("sha256")} for d in docs]
    version = params.version(end, inputs) if inputs else f"{end:%Y%m%d}_empty"
    return {"version": version, "collection": collection_name(version), "window": {"start": start.isoformat(),
            "end": end.isoformat()}, "inputs": inputs, "params": params.as_dict()}


class ImmutableVersion(RuntimeError):
    """A version that is (or was) live is never written again: its artifacts, document and collection."""


def _reusable(db: Database, root: LakePath, info: dict[str, Any]) -> dict[str, Any] | None:
    doc = db[MODELS].find_one({"_id": info["version"]})
    if doc is None or doc.get("inputs") != info["inputs"] or doc.get("params") != info["params"]:
        return None
    for art in doc.get("artifacts", []):
        reg = registry.get(db, art["path"])
        if reg is None or reg.get("sha256") != art["sha256"] or not (root / art["path"]).exists():
            return None
    return doc


def train(root: LakePath, db: Database, anchor: datetime, params: AlsParams, *, backend: str = "auto",
          run_id: str = "manual") -> dict[str, Any]:
    """Evaluate and train the model of the window ending at ``anchor``; returns a small summary."""
    info = plan(db, anchor, params)
    version = info["version"]
    if not info["inputs"]:
        raise matrix.EmptyWindow(f"no listens partitions in the window {info['window']['start']} .. "
                                 f"{info['window']['end']}: nothing to train on")
    existing = _reusable(db, root, info)
    if existing is not None:
        log.info("model %s already trained on the same inputs and params: reusing its artifacts", version)
        return _summary(existing, reused=True)
    current = db[MODELS].find_one({"_id": version}, {"status": 1})
    if current is not None and current.get("status") in ("active", "retired"):
        # same name = same inputs and params; only damaged artifacts get here, and a live (or rollback)
        # model is never rewritten in place: the audit reports the damage, an operator decides
        raise ImmutableVersion(f"model {version} is {current['status']} and its artifacts do not match its "
                               "document: it is never retrained in place (run store_audit; retrain with "
                               "other params to get a new version)")

    start, end = window_of(anchor, params)
    cut = end - timedelta(days=params.eval_days)
    con, _ = reader.open_span(root, db, start, end)
    try:
        inter = matrix.load(con, params.weights, cut)
    finally:
        con.close()
    fit_kwargs = {"factors": params.factors, "iterations": params.iterations,
                  "regularization": params.regularization, "cg_steps": params.cg_steps,
                  "random_state": params.random_state, "backend": backend}

    t0 = time.monotonic()
    if inter.train.nnz == 0:
        raise matrix.EmptyWindow(f"no interactions before the evaluation cut {cut}: window too short")
    eval_fit = backends.fit(matrix.confidence(inter.train, params.alpha, params.confidence), **fit_kwargs)
    metrics = evaluate.evaluate(eval_fit.user_factors, eval_fit.item_factors, inter.train, inter.test)
    log.info("evaluation (%d users): ALS %s | popularity %s", metrics["als"]["users"], metrics["als"],
             metrics["popularity"])
    full_fit = backends.fit(matrix.confidence(inter.full, params.alpha, params.confidence), **fit_kwargs)
    pop = metrics["popularity"]["ndcg_at_10"]
    report = {
        "version": version, "window": info["window"], "eval_cut": cut.isoformat(), "params": info["params"],
        "metrics": metrics, "lift_ndcg_at_10": round(metrics["als"]["ndcg_at_10"] / pop, 4) if pop else None,
        "matrix": {"users": inter.shape[0], "items": inter.shape[1], "nnz": int(inter.full.nnz),
                   "train_nnz": int(inter.train.nnz), "test_nnz": int(inter.test.nnz)},
        "backend": {"asked": backend, "used": full_fit.backend, "reason": full_fit.reason,
                    "seconds_per_iteration": round(float(np.mean(full_fit.seconds_per_iteration)), 4),
                    "train_seconds": round(full_fit.seconds, 3), "eval_train_seconds": round(eval_fit.seconds, 3)},
        "seconds": round(time.monotonic() - t0, 3),
    }
    artifacts = _publish_artifacts(root, db, version, inter, full_fit, report, run_id)
    now = datetime.now(UTC)
    doc_fields = {
        "kind": "als", "params": info["params"], "metrics": {**metrics, "lift_ndcg_at_10": report["lift_ndcg_at_10"]},
        "window": {"start": start, "end": end}, "inputs": info["inputs"], "code_version": code_version(),
        "artifacts": artifacts, "backend": report["backend"], "matrix": report["matrix"],
        "collection": info["collection"], "trained_at": now, "run_id": run_id,
    }
    # only a candidate (never served) may be rewritten, e.g. after a crash between artifacts and document
    update: dict[str, Any] = {"$set": doc_fields | {"status": "candidate"}, "$setOnInsert": {"created_at": now}}
    res = db[MODELS].update_one({"_id": version, "status": {"$nin": ["active", "retired"]}}, update, upsert=True)
    if not res.upserted_id and not res.matched_count:  # pragma: no cover - a concurrent activation
        raise ImmutableVersion(f"model {version} became live while it was being trained")
    return _summary(db[MODELS].find_one({"_id": version}), reused=False)


def _publish_artifacts(root: LakePath, db: Database, version: str, inter: matrix.Interactions,
                       fit: backends.FitResult, report: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    scratch = scratch_dirs.make("als-")  # sweeps the als-* folders of killed runs first
    try:
        files = {
            USER_FACTORS: ("user_factors", factors_table(inter.users, fit.user_factors, "user_id")),
            ITEM_FACTORS: ("item_factors", factors_table(inter.items, fit.item_factors, "track_id")),
        }
        artifacts, records = [], []
        day = report["window"]["end"][:10]
        for name, (kind, table) in files.items():
            local = scratch / name
            pq.write_table(table, local, **schema.PARQUET_OPTIONS)
            rel = f"{model_dir(version)}/{name}"
            info = storage.publish_file(local, root / rel)
            artifacts.append({"path": rel, "bytes": info.bytes, "sha256": info.sha256, "kind": kind,
                              "rows": table.num_rows})
            records.append(registry.PartitionRecord(rel, "als", day, PRODUCER, table.num_rows, info.bytes,
                                                    info.sha256, run_id))
        rel = f"{model_dir(version)}/{METRICS}"
        local = scratch / METRICS
        local.write_text(json.dumps(report | {"artifacts": artifacts}, indent=2, sort_keys=True, default=str) + "\n")
        info = storage.publish_file(local, root / rel)
        artifacts.append({"path": rel, "bytes": info.bytes, "sha256": info.sha256, "kind": "metrics"})
        records.append(registry.PartitionRecord(rel, "als", day, PRODUCER, 1, info.bytes, info.sha256, run_id))
        registry.record(db, records)
        return artifacts
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _summary(doc: dict[str, Any], reused: bool) -> dict[str, Any]:
    arts = {a["kind"]: a["path"] for a in doc["artifacts"]}
    return {"version": doc["_id"], "collection": doc["collection"], "status": doc.get("status"),
            "window": {k: reader.utc(v).isoformat() for k, v in doc["window"].items()},
            "metrics": {"als": doc["metrics"]["als"], "popularity": doc["metrics"]["popularity"]},
            "factors": doc["params"]["factors"], "backend": doc["backend"]["used"],
            "user_factors": arts["user_factors"], "item_factors": arts["item_factors"], "reused": reused}
