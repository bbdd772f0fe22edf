"""Read models of the operators' pages (issue 17): what the Airflow UI plugin (and any other reader,
e.g. a script or the serving API) shows about the models, the store audits and the lyrics coverage.
Plain Python over the stores the factory ``musicrec.stores`` opens: no Airflow, no HTML.

Every function returns JSON-ready dicts (datetimes as ISO strings), so the plugin's JSON twins are
these values as they are and its HTML pages only lay them out.

* :func:`als_models` — every ALS version with its window, inputs, params, metrics against popularity,
  gate decision, backend and state: ``active`` (the model the alias serves), ``retained`` (retired,
  its collection still in the serving store: a roll-back target), ``retired`` (its collection dropped),
  ``candidate`` (trained, never published) or ``refused`` (the gate said no).
* :func:`embedding_models` — the lyrics-embedding models: model, dim, vectors, whether the alias serves it.
* :func:`audits` / :func:`audit_report` — the store audit runs from the lake's ``audit/<run_id>/report.json``
  and the open findings in Mongo ``audit_state``.
* :func:`lyrics` — ``songs.lyrics.status`` counts, the error backlog with its next attempts, the runs
  (provider, songs, rate).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from musicrec.als.model import MODELS
from musicrec.als.params import ALIAS, collection_name, version_of
from musicrec.audit.core import KINDS, STATE
from musicrec.audit.lake import run_path
from musicrec.embeddings import store as emb_store
from musicrec.lake import storage
from musicrec.lyrics import queue

log = logging.getLogger(__name__)

ACTIVE, RETAINED, RETIRED, CANDIDATE, REFUSED = "active", "retained", "retired", "candidate", "refused"
REPORT = "report.json"
BACKLOG_LIMIT = 50


def iso(value: Any) -> Any:
    """A datetime as an ISO string (naive ones are UTC, as pymongo returns them); others unchanged."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return iso(value)


# ----------------------------------------------------------------------------- ALS models

def served_versions(store: Any) -> set[str] | None:
    """Versions whose collection is in the serving vector store (None without a store: unknown)."""
    if store is None:
        return None
    try:
        return {v for v in (version_of(n) for n in store.versions(ALIAS)) if v}
    except Exception:  # a page must render while Milvus is down: the states fall back to the documents
        log.warning("cannot list the %s collections", ALIAS, exc_info=True)
        return None


def model_state(doc: Mapping[str, Any], served: set[str] | None, previous: str | None = None) -> str:
    """``active`` | ``retained`` | ``retired`` | ``candidate`` | ``refused`` (see the module doc). Without the
    store's listing (``served`` None) the active model's ``previous_version`` counts as retained: the publish
    keeps exactly that one."""
    status = doc.get("status")
    if status == ACTIVE:
        return ACTIVE
    if status == RETIRED:
        kept = doc["_id"] in served if served is not None else doc["_id"] == previous
        return RETAINED if kept else RETIRED
    gate = doc.get("gate") or {}
    if gate and gate.get("passed") is False:
        return REFUSED
    return CANDIDATE


def model_view(doc: Mapping[str, Any], served: set[str] | None = None, previous: str | None = None
               ) -> dict[str, Any]:
    """One ALS version as the Models page shows it."""
    metrics = doc.get("metrics") or {}
    als, pop = metrics.get("als") or {}, metrics.get("popularity") or {}
    backend = doc.get("backend") or {}
    gate = doc.get("gate") or {}
    window = doc.get("window") or {}
    out = {
        "version": doc["_id"], "status": doc.get("status"), "state": model_state(doc, served, previous),
        "window": {"start": iso(window.get("start")), "end": iso(window.get("end"))},
        "inputs": len(doc.get("inputs") or []),
        "input_paths": [i.get("path") for i in doc.get("inputs") or []],
        "params": doc.get("params") or {},
        "metrics": {"als": als, "popularity": pop, "lift_ndcg_at_10": metrics.get("lift_ndcg_at_10")},
        "ndcg_at_10": {"als": als.get("ndcg_at_10"), "popularity": pop.get("ndcg_at_10")},
        "gate": {"passed": gate.get("passed"), "reason": gate.get("reason"), "decided_at": iso(gate.get("decided_at")),
                 "min_lift": gate.get("min_lift"), "force": gate.get("force")} if gate else None,
        "backend": backend.get("used"), "seconds_per_iteration": backend.get("seconds_per_iteration"),
        "backend_reason": backend.get("reason"), "matrix": doc.get("matrix") or {},
        "collection": doc.get("collection") or collection_name(str(doc["_id"])),
        "run_id": doc.get("run_id"), "trained_at": iso(doc.get("trained_at")),
        "activated_at": iso(doc.get("activated_at")), "retired_at": iso(doc.get("retired_at")),
        "previous_version": doc.get("previous_version"),
        "artifacts": [{"path": a.get("path"), "kind": a.get("kind"), "bytes": a.get("bytes"), "rows": a.get("rows")}
                      for a in doc.get("artifacts") or []],
    }
    return _jsonable(out)


def _window_end(doc: Mapping[str, Any]) -> str:
    end = (doc.get("window") or {}).get("end")
    return iso(end) or ""


def als_models(db: Any, store: Any = None, *, limit: int = 200) -> dict[str, Any]:
    """Every ALS version (newest window first, at most ``limit``), the active one, the retained ones (the
    roll-back targets) and the ndcg@10 series for the chart (oldest first)."""
    docs = list(db[MODELS].find({"kind": "als"}, {"inputs.sha256": 0}))
    docs.sort(key=lambda d: (_window_end(d), iso(d.get("trained_at")) or "", str(d["_id"])), reverse=True)
    docs = docs[:limit]
    served = served_versions(store)
    active = next((d for d in docs if d.get("status") == ACTIVE), None)
    previous = active.get("previous_version") if active else None
    models = [model_view(d, served, previous) for d in docs]
    alias = None
    if store is not None:
        try:
            alias = store.alias_target(ALIAS)
        except Exception:
            log.warning("cannot read the alias %s", ALIAS, exc_info=True)
    chart = [{"version": m["version"], "window_end": m["window"]["end"], "state": m["state"],
              "als": m["ndcg_at_10"]["als"], "popularity": m["ndcg_at_10"]["popularity"]}
             for m in reversed(models) if m["ndcg_at_10"]["als"] is not None]
    return {"active": active["_id"] if active else None, "alias": {"name": ALIAS, "target": alias},
            "retained": [m["version"] for m in models if m["state"] == RETAINED],
            "models": models, "chart": chart, "embeddings": embedding_models(db, store)}


def als_model(db: Any, version: str, store: Any = None) -> dict[str, Any] | None:
    """One version (None if unknown)."""
    doc = db[MODELS].find_one({"_id": str(version), "kind": "als"})
    if doc is None:
        return None
    active = db[MODELS].find_one({"kind": "als", "status": ACTIVE}, {"previous_version": 1})
    return model_view(doc, served_versions(store), (active or {}).get("previous_version"))


def model_of_run(db: Any, run_id: str, store: Any = None, version: str | None = None) -> dict[str, Any] | None:
    """The model an ``als_training`` run worked on: ``version`` when the caller knows it (the run's
    ``train`` XCom; a re-run that reused artifacts keeps the first run's ``run_id``), else the model
    trained by ``run_id``."""
    if version:
        found = als_model(db, version, store)
        if found is not None:
            return found
    doc = db[MODELS].find_one({"kind": "als", "run_id": str(run_id)}, {"_id": 1})
    return als_model(db, doc["_id"], store) if doc else None


# ----------------------------------------------------------------------------- lyrics embeddings

def embedding_models(db: Any, store: Any = None) -> list[dict[str, Any]]:
    """The lyrics-embedding models: model, dim, vector count (stamped songs; the store's row count when
    a store is given) and whether the ``lyrics_embeddings`` alias serves the model's collection."""
    target = None
    if store is not None:
        try:
            target = store.alias_target(emb_store.ALIAS)
        except Exception:
            log.warning("cannot read the alias %s", emb_store.ALIAS, exc_info=True)
    out = []
    for doc in db[MODELS].find({"kind": emb_store.MODEL_KIND}).sort("_id", 1):
        name = doc.get("collection")
        vectors = db["songs"].count_documents({"embedding.model_id": doc.get("model_id")}) if doc.get("model_id") \
            else None
        stored = None
        if store is not None and name:
            try:
                stored = store.count(name) if store.has_collection(name) else 0
            except Exception:
                log.warning("cannot count %s", name, exc_info=True)
        out.append(_jsonable({
            "id": doc["_id"], "model": doc.get("model"), "model_id": doc.get("model_id"), "dim": doc.get("dim"),
            "sparse": doc.get("sparse"), "status": doc.get("status"), "collection": name,
            "alias": doc.get("alias") or emb_store.ALIAS, "vectors": vectors, "store_rows": stored,
            "alias_active": (target == name) if target is not None else doc.get("status") == ACTIVE,
            "activated_at": doc.get("activated_at")}))
    return out


# ----------------------------------------------------------------------------- store audits

def _safe_run_dir(run_id: str) -> str:
    """``audit/<run id made path-safe>``; a run id that would name no folder of its own is refused."""
    rel = run_path(str(run_id))
    if rel.split("/", 1)[1].strip(".") == "":
        raise ValueError(f"not a run id: {run_id!r}")
    return rel


def report_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """One audit run's line: verdict, counts per (scope, store, kind) before repair, action count."""
    per: dict[str, dict[str, int]] = {}
    by_kind = dict.fromkeys(KINDS, 0)
    for row in report.get("counts") or []:
        if row.get("state") != "before":
            continue
        key = f"{row.get('scope')} {row.get('store')}"
        per.setdefault(key, {})[row.get("kind")] = per.get(key, {}).get(row.get("kind"), 0) + int(row.get("count", 0))
        by_kind[row.get("kind")] = by_kind.get(row.get("kind"), 0) + int(row.get("count", 0))
    params = report.get("params") or {}
    return {
        "run_id": report.get("run_id"), "generated_at": report.get("generated_at"), "mode": params.get("mode"),
        "findings": report.get("findings", 0), "remaining": report.get("remaining", 0),
        "clean": bool(report.get("clean")), "passed": bool(report.get("passed")),
        "verdict": ("clean" if report.get("clean") else f"{report.get('remaining', 0)} open findings")
        + (f", failed scopes: {', '.join(report.get('failed_scopes') or [])}" if report.get("failed_scopes") else ""),
        "failed_scopes": report.get("failed_scopes") or [], "per_store": per, "per_kind": by_kind,
        "actions": sum(int(a.get("count", 0)) for a in report.get("actions") or []),
    }


def _reports(root: Any) -> Iterable[dict[str, Any]]:
    base = root / "audit"
    if not base.exists():
        return
    for folder in base.iterdir():
        path = folder / REPORT
        try:
            if path.is_file():
                yield storage.read_json(path)
        except (OSError, ValueError):  # a half-written or foreign file: skipped, never a crashed page
            log.warning("unreadable audit report %s", path, exc_info=True)


def audits(root: Any, db: Any = None, *, limit: int = 100) -> dict[str, Any]:
    """The audit runs (newest first, at most ``limit``), the trend (oldest first: findings and open ones
    per run) and the findings still open in ``audit_state`` per scope, store and kind."""
    runs = sorted((report_summary(r) for r in _reports(root) if isinstance(r, dict)),
                  key=lambda s: str(s.get("generated_at") or ""), reverse=True)[:limit]
    trend = [{"run_id": r["run_id"], "at": r["generated_at"], "findings": r["findings"], "remaining": r["remaining"]}
             for r in reversed(runs)]
    open_: list[dict[str, Any]] = []
    if db is not None:
        for row in db[STATE].aggregate([{"$group": {"_id": {"scope": "$scope", "store": "$store", "kind": "$kind"},
                                                    "n": {"$sum": 1}, "first_seen": {"$min": "$first_seen"}}}]):
            open_.append(_jsonable(dict(row["_id"]) | {"count": row["n"], "first_seen": row["first_seen"]}))
        open_.sort(key=lambda r: (str(r.get("scope")), str(r.get("store")), str(r.get("kind"))))
    return {"runs": runs, "trend": trend, "open": open_}


def audit_report(root: Any, run_id: str) -> dict[str, Any] | None:
    """The ``report.json`` of one run (None if there is none); ``ValueError`` for a run id that names no
    folder of its own (``..``)."""
    path = root / _safe_run_dir(run_id) / REPORT
    if not path.is_file():
        return None
    doc = storage.read_json(path)
    return doc | {"summary": report_summary(doc)} if isinstance(doc, dict) else None


# ----------------------------------------------------------------------------- lyrics

def lyrics(db: Any, runs: Iterable[Mapping[str, Any]] | None = None, *, max_attempts: int = 5,
           backlog_limit: int = BACKLOG_LIMIT, now: datetime | None = None) -> dict[str, Any]:
    """Coverage of the catalog's lyrics: status counts (``musicrec.lyrics.queue.status_counts``), the
    error backlog (next attempts first; ``due`` = retried by the next run, ``exhausted`` = no more tries
    at ``max_attempts``), and per run the provider, songs and rate. ``runs``: the fetch results of the
    ``lyrics_enrichment`` runs (``run_id``, ``provider``, ``songs``, ``seconds``, status counts), which the
    caller reads from where the runs left them (the plugin: the fetch tasks' XCom); without them the
    songs are grouped by the provider recorded on each."""
    now = now or datetime.now(UTC)
    counts = queue.status_counts(db)
    total = sum(counts.values())
    settled = total - counts.get("pending", 0) - counts.get("error", 0)
    errors = db[queue.SONGS]
    backlog = []
    for d in errors.find({"lyrics.status": "error"}, {"title": 1, "artist": 1, "lyrics": 1}
                         ).sort([("lyrics.next_attempt_at", 1), ("_id", 1)]).limit(backlog_limit):
        ly = d.get("lyrics") or {}
        nxt = ly.get("next_attempt_at")
        attempts = int(ly.get("attempts") or 0)
        nxt_utc = nxt if not isinstance(nxt, datetime) or nxt.tzinfo else nxt.replace(tzinfo=UTC)
        backlog.append(_jsonable({
            "track_id": d["_id"], "title": d.get("title"), "artist": d.get("artist"), "attempts": attempts,
            "next_attempt_at": nxt, "last_error": ly.get("last_error"), "provider": ly.get("provider"),
            "exhausted": attempts >= max_attempts,
            "due": attempts < max_attempts and isinstance(nxt_utc, datetime) and nxt_utc <= now}))
    exhausted = errors.count_documents({"lyrics.status": "error", "lyrics.attempts": {"$gte": max_attempts}})
    per_run = [_run_line(r) for r in runs] if runs is not None else None
    providers = []
    for row in errors.aggregate([{"$match": {"lyrics.provider": {"$ne": None}}},
                                 {"$group": {"_id": "$lyrics.provider", "n": {"$sum": 1},
                                             "first": {"$min": "$lyrics.fetched_at"},
                                             "last": {"$max": "$lyrics.fetched_at"}}}]):
        providers.append(_jsonable({"provider": row["_id"], "songs": row["n"], "first": row["first"],
                                    "last": row["last"]}))
    providers.sort(key=lambda p: str(p["provider"]))
    return {"counts": counts, "total": total, "coverage": round(settled / total, 4) if total else None,
            "found_share": round(counts.get("found", 0) / total, 4) if total else None,
            "errors": counts.get("error", 0), "exhausted": exhausted, "max_attempts": max_attempts,
            "backlog": backlog, "runs": per_run, "providers": providers}


def _run_line(run: Mapping[str, Any]) -> dict[str, Any]:
    songs = int(run.get("songs") or 0)
    seconds = float(run.get("seconds") or 0)
    return _jsonable({"run_id": run.get("run_id"), "provider": run.get("provider"), "songs": songs,
                      "seconds": round(seconds, 3), "rate_per_s": round(songs / seconds, 2) if seconds > 0 else None,
                      "at": run.get("at"),
                      **{k: int(run.get(k) or 0) for k in ("found", "not_found", "instrumental", "error")}})


def merge_runs(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chunk results (one per mapped fetch task) → one line per (run, provider): sums of songs and
    statuses; ``seconds`` is the longest chunk's (chunks run side by side)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (str(r.get("run_id")), str(r.get("provider")))
        m = merged.setdefault(key, {"run_id": key[0], "provider": key[1], "songs": 0, "seconds": 0.0,
                                    "at": r.get("at"), "found": 0, "not_found": 0, "instrumental": 0, "error": 0})
        for k in ("songs", "found", "not_found", "instrumental", "error"):
            m[k] += int(r.get(k) or 0)
        m["seconds"] = max(m["seconds"], float(r.get("seconds") or 0))
        m["at"] = max(str(m.get("at") or ""), str(r.get("at") or "")) or None
    return sorted(merged.values(), key=lambda m: str(m.get("at") or ""), reverse=True)
