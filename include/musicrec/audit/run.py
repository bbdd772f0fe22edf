"""One audit of a scope: plan → compare → record → (repair → re-audit); returns the report part."""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from musicrec.audit import core

log = logging.getLogger(__name__)

SCOPES = ("lake", "als", "lyrics")  # the order make run and the DAG audit them in
# what a run does with its findings: ``audit`` records them; ``plan`` lists the repair and writes
# nothing, not even the sightings; ``repair`` fixes them and audits again
MODES = ("audit", "plan", "repair")
DEFAULT_MODE = "audit"


def check_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`MODES`, else a ``ValueError`` naming them."""
    if mode not in MODES:
        raise ValueError(f"unknown audit mode {mode!r} (one of {MODES})")
    return mode


def plans(scope: str, ctx: core.AuditContext) -> list[core.ScopePlan]:
    if scope not in SCOPES:
        raise ValueError(f"unknown audit scope {scope!r} (one of {SCOPES})")
    # imported on use: the lyrics scope needs musicrec.embeddings, the others do not
    return importlib.import_module(f"musicrec.audit.{scope}").plans(ctx)


def _summarize(plan: core.ScopePlan, findings: core.FindingLog, meta: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for (store, kind), n in sorted(findings.counts.items()):
        counts.setdefault(store, {})[kind] = n
    examples = {f"{store}|{kind}": ids for (store, kind), ids in sorted(findings.examples.items())}
    return {"counts": counts, "total": findings.total, "examples": examples, "expected": plan.expected_name, **meta}


def run_scope(scope: str, ctx: core.AuditContext, *, mode: str = DEFAULT_MODE, grace_minutes: float = 60.0,
              batch_size: int = 500) -> dict[str, Any]:
    """Audit ``scope``; in ``mode`` ``repair`` fix what it found and audit again; in ``plan`` list the
    repair and write nothing. Returns a small dict per plan, for the report."""
    dry_run = check_mode(mode) == "plan"
    out: dict[str, Any] = {"scope": scope, "plans": []}
    t0 = time.monotonic()
    for plan in plans(scope, ctx):
        part: dict[str, Any] = {"name": plan.scope, "info": plan.info}
        if plan.skipped:
            log.info("%s: skipped: %s", plan.scope, plan.skipped)
            out["plans"].append(part | {"skipped": plan.skipped, "before": {"counts": {}, "total": 0}})
            continue
        t1 = time.monotonic()
        findings, meta = core.audit(plan, ctx)
        try:
            part["before"] = _summarize(plan, findings, meta) | {"seconds": round(time.monotonic() - t1, 3)}
            if not dry_run:  # a dry run writes nothing but its report (first sightings included)
                core.track(ctx.db, ctx, plan, findings)
            if mode != "audit" and findings.total:
                t2 = time.monotonic()
                part["actions"] = core.repair(plan, ctx, findings, grace_minutes=grace_minutes, dry_run=dry_run,
                                              batch_size=batch_size)
                part["repair_seconds"] = round(time.monotonic() - t2, 3)
                if not dry_run:
                    # re-plan: structural repairs (a rebuilt collection, a swapped alias) change the stores
                    again = {p.scope: p for p in plans(scope, ctx)}[plan.scope]
                    t3 = time.monotonic()
                    after, meta2 = core.audit(again, ctx)
                    try:
                        core.track(ctx.db, ctx, again, after)
                        part["after"] = _summarize(again, after, meta2) | {
                            "seconds": round(time.monotonic() - t3, 3)}
                    finally:
                        after.close()
        finally:
            findings.close()
        out["plans"].append(part)
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def remaining(part: dict[str, Any]) -> int:
    """Findings still open after a scope run (after the repair's re-audit when there was one)."""
    return sum((p.get("after") or p.get("before") or {}).get("total", 0) for p in part.get("plans", []))
