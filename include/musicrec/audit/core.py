"""The audit's moving parts: what a scope declares, how it is compared, how findings are repaired.

A **scope** (``als``, ``lyrics``, ``lake``) turns its sources of truth (design §4) into one
*expected* stream of ``(id, fingerprint)`` pairs and one :class:`Target` per store that must mirror
it. Each target streams what the store holds; :mod:`musicrec.audit.engine` compares the two in
buckets; every difference becomes a typed :class:`Finding`. Findings that concern a whole store
(an alias pointing elsewhere, a collection of the wrong dimension) are *structural*: the scope
reports them itself and the per-id comparison of that store is skipped.

Repair never trusts the listing: for each bounded batch of finding ids it re-reads the source of
truth and the store (point lookups) and acts on that fresh state — an id a concurrent writer fixed
in the meantime is left alone, an id the catalog now expects is never deleted. Orphans are deleted
only once their age (``audit_state.first_seen``, see :func:`track`) reaches ``grace_minutes``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from musicrec.audit import engine
from musicrec.vectors import VectorStore, as_stores

log = logging.getLogger(__name__)

KINDS = ("missing", "orphan", "stale", "size_mismatch", "checksum_mismatch", "dimension_mismatch", "duplicate")
STATE = "audit_state"  # first/last sighting of every open finding (orphan age, flags)
IN_CHUNK = 500  # SecantusDB: $in lists <= 500 ids
EXAMPLE_IDS = 20
# Enumeration page sizes: milvus-lite's query_iterator costs grow with the number of pages (1,000 rows a
# page: 4.7k ids/s at 100k rows; 16,384: ~5x faster, bench/audit.py); Milvus caps a page at 16,384.
MILVUS_PAGE = 10_000
QDRANT_PAGE = 2_000
PAGES = {"milvus": MILVUS_PAGE, "qdrant": QDRANT_PAGE}  # per store kind; others page by DEFAULT_PAGE
DEFAULT_PAGE = 2_000


def page_size(store: Any) -> int:
    return PAGES.get(getattr(store, "kind", ""), DEFAULT_PAGE)


@dataclass(frozen=True)
class Finding:
    scope: str
    store: str
    kind: str
    id: str
    expected: str | None = None
    actual: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


Pairs = Iterable[tuple[str, str]]


@dataclass
class Target:
    """One store that must mirror the scope's expectation."""

    store: str  # e.g. "milvus:music_collection_v…", "qdrant:…", "mongo:users", "lake"
    stream: Callable[[], Pairs]  # (id, fingerprint) of every item the store holds
    lookup: Callable[[list[str]], dict[str, str]]  # fresh fingerprints of some ids (repair's re-check)
    upsert: Callable[[list[str]], dict[str, Any]] | None = None  # write the expected state of ids
    delete: Callable[[list[str]], dict[str, Any]] | None = None  # remove orphan ids
    classify: Callable[[str, str], str] = lambda expected, actual: "stale"  # kind of a fingerprint difference
    owns: Callable[[str], bool] = lambda key: True  # ids outside are never orphans (e.g. unmanaged lake paths)
    ages: Callable[[list[str]], dict[str, datetime]] | None = None  # the store's own timestamps (lake mtime)


@dataclass
class ScopePlan:
    scope: str
    expected_name: str = ""
    expected: Callable[[], Pairs] | None = None
    expected_lookup: Callable[[list[str]], dict[str, str]] | None = None
    targets: list[Target] = field(default_factory=list)
    structural: list[Finding] = field(default_factory=list)  # whole-store findings (no per-id compare)
    structural_repairs: list[Callable[[bool], dict[str, Any]]] = field(default_factory=list)
    skipped: str | None = None  # why the scope has nothing to audit (e.g. no active model)
    info: dict[str, Any] = field(default_factory=dict)
    guard: Callable[[], str | None] | None = None  # before repair: a reason to refuse (e.g. model changed)


@dataclass
class AuditContext:
    db: Database
    root: Any  # LakePath
    milvus: Any = None  # the serving store (a VectorStore or a client); kept for callers of the two-store era
    qdrant: Any = None  # its mirror
    stores: Sequence[Any] | None = None  # the vector stores in order, the serving one first (wins over the two)
    run_id: str = "manual"
    lake_checksums: bool = True
    examples: int = EXAMPLE_IDS
    spill_dir: str | None = None  # local scratch for the spills (default: <staging>/audit)
    bits: int = engine.DEFAULT_BITS
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def vector_stores(self) -> list[VectorStore]:
        """Every vector store to audit, in order: ``stores`` when given, else ``milvus`` then ``qdrant``."""
        return as_stores(self.stores) if self.stores is not None else as_stores(self.milvus, self.qdrant)

    def __post_init__(self) -> None:
        if self.spill_dir is None:
            from musicrec.settings import staging_dir

            path = staging_dir() / "audit"
            path.mkdir(parents=True, exist_ok=True)
            self.spill_dir = str(path)


class FindingLog:
    """Counts, a few example ids per (store, kind), and every finding spilled to a temp JSONL file
    (read back in batches by the repair), so memory stays bounded however many findings there are."""

    def __init__(self, examples: int = EXAMPLE_IDS, spill_dir: str | None = None) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], list[str]] = {}
        self._max = examples
        fd, name = tempfile.mkstemp(prefix="audit-findings-", suffix=".jsonl", dir=spill_dir)
        self.path = Path(name)
        self._fh = os.fdopen(fd, "w")

    def add(self, f: Finding) -> None:
        key = (f.store, f.kind)
        self.counts[key] += 1
        ex = self.examples.setdefault(key, [])
        if len(ex) < self._max:
            ex.append(f.id)
        self._fh.write(json.dumps(f.as_dict()) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def batches(self, store: str, size: int) -> Iterator[list[Finding]]:
        self._fh.flush()
        batch: list[Finding] = []
        with open(self.path) as fh:
            for line in fh:
                d = json.loads(line)
                if d["store"] != store:
                    continue
                batch.append(Finding(**d))
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- audit

def kind_of(target: Target, diff: engine.Difference) -> str:
    if diff.duplicate:
        return "duplicate"
    if diff.actual is None:
        return "missing"
    if diff.expected is None:
        return "orphan"
    return target.classify(diff.expected, diff.actual)


def progress(pairs: Pairs, label: str, every_s: float = 30.0) -> Iterator[tuple[str, str]]:
    """Pass ``pairs`` through, logging the count and rate every ``every_s`` seconds (long listings)."""
    t0 = last = time.monotonic()
    for n, pair in enumerate(pairs, 1):
        yield pair
        if n % 4096 == 0 and (now := time.monotonic()) - last >= every_s:
            last = now
            log.info("%s: %d ids listed (%.0f ids/s)", label, n, n / (now - t0))


def audit(plan: ScopePlan, ctx: AuditContext) -> tuple[FindingLog, dict[str, Any]]:
    """Compare every target of ``plan`` with its expectation; returns the findings and timings."""
    findings = FindingLog(ctx.examples, ctx.spill_dir)
    try:
        return findings, _compare(plan, ctx, findings)
    except BaseException:
        findings.close()
        raise


def _compare(plan: ScopePlan, ctx: AuditContext, findings: FindingLog) -> dict[str, Any]:
    timings: dict[str, Any] = {"stores": {}}
    rows: dict[str, int] = {}
    for f in plan.structural:
        findings.add(f)
    if plan.skipped or plan.expected is None:
        return {"timings": timings, "rows": rows}
    broken = {f.store for f in plan.structural}
    t0 = time.monotonic()
    with engine.Side(plan.expected_name, bits=ctx.bits, spill_dir=ctx.spill_dir) as expected:
        expected.feed(progress(plan.expected(), f"{plan.scope}: {plan.expected_name}")).finish()
        timings["expected_s"] = round(time.monotonic() - t0, 3)
        rows[plan.expected_name] = expected.rows
        log.info("%s: %s streamed %d expected ids in %.1f s", plan.scope, plan.expected_name, expected.rows,
                 timings["expected_s"])
        for target in plan.targets:
            if target.store in broken:
                log.warning("%s: %s has a structural finding: per-id comparison skipped", plan.scope, target.store)
                continue
            t1 = time.monotonic()
            with engine.Side(target.store, bits=ctx.bits, spill_dir=ctx.spill_dir) as actual:
                actual.feed(progress(target.stream(), f"{plan.scope}: {target.store}")).finish()
                listed = time.monotonic() - t1
                n = 0
                for d in engine.diff(expected, actual):
                    if d.expected is None and not target.owns(d.id):
                        continue
                    findings.add(Finding(plan.scope, target.store, kind_of(target, d), d.id, d.expected, d.actual))
                    n += 1
                rows[target.store] = actual.rows
                timings["stores"][target.store] = {"list_s": round(listed, 3),
                                                   "compare_s": round(time.monotonic() - t1 - listed, 3),
                                                   "ids_per_s": round(actual.rows / listed) if listed > 0 else None}
                log.info("%s: %s: %d ids listed in %.1f s, %d findings", plan.scope, target.store, actual.rows,
                         listed, n)
    return {"timings": timings, "rows": rows}


def track(db: Database, ctx: AuditContext, plan: ScopePlan, findings: FindingLog) -> None:
    """Record every open finding in ``audit_state`` (``first_seen`` kept across runs via ``$min``,
    ``last_seen`` = this run) and forget this scope's findings that are gone: afterwards the scope's
    documents are exactly ``findings`` (a repaired finding's state is removed, so an id that turns
    up again later starts a fresh grace window). ``first_seen`` is what
    ages an orphan: vector stores keep no insert time, so the audit remembers when it first saw it
    (the lake's own mtime is used when older, see :class:`Target` ``ages``)."""
    coll = db[STATE]
    now = ctx.started
    # Each call marks what it saw with its own token and then drops this scope's documents without
    # it. (Dropping by ``last_seen < run start`` kept every finding that the first audit of a run
    # recorded and its repair then fixed: the re-audit of the same run has the same start time.)
    sighting = uuid.uuid4().hex
    targets = {t.store: t for t in plan.targets}
    stores = {s for s, _ in findings.counts} | set(targets)
    for store in stores:
        target = targets.get(store)
        for batch in findings.batches(store, IN_CHUNK):
            ages = target.ages([f.id for f in batch]) if target is not None and target.ages else {}
            ops = []
            for f in batch:
                first = min(now, ages.get(f.id, now))
                ops.append(UpdateOne({"_id": f"{plan.scope}|{store}|{f.id}"},
                                     {"$set": {"scope": plan.scope, "store": store, "key": f.id, "kind": f.kind,
                                               "last_seen": now, "run_id": ctx.run_id, "sighting": sighting},
                                      "$min": {"first_seen": first}}, upsert=True))
            coll.bulk_write(ops, ordered=False)
        coll.delete_many({"scope": plan.scope, "store": store, "sighting": {"$ne": sighting}})
    coll.delete_many({"scope": plan.scope, "store": {"$nin": sorted(stores)}})


def first_seen(db: Database, scope: str, store: str, ids: list[str]) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for part in chunks(ids):
        keys = [f"{scope}|{store}|{i}" for i in part]
        for d in db[STATE].find({"_id": {"$in": keys}}, {"key": 1, "first_seen": 1}):
            fs = d["first_seen"]
            out[d["key"]] = fs if fs.tzinfo else fs.replace(tzinfo=UTC)
    return out


# ----------------------------------------------------------------------------- repair

IDS_LISTED = 1000  # ids listed per action in the report (the count is always exact)


def _action(actions: list[dict[str, Any]], scope: str, store: str, action: str, ids: list[str],
            **extra: Any) -> None:
    if not ids:
        return
    for a in actions:  # one entry per (store, action): batches accumulate
        if a["store"] == store and a["action"] == action and a["scope"] == scope:
            a["count"] += len(ids)
            room = IDS_LISTED - len(a["ids"])
            a["ids"].extend(ids[:max(0, room)])
            return
    # planned or done is not recorded per action: the report's ``params.mode`` says it once
    actions.append({"scope": scope, "store": store, "action": action, "count": len(ids), "ids": ids[:IDS_LISTED],
                    **extra})


def repair(plan: ScopePlan, ctx: AuditContext, findings: FindingLog, *, grace_minutes: float = 60.0,
           dry_run: bool = False, batch_size: int = 500) -> list[dict[str, Any]]:
    """Fix what ``findings`` names, batch by batch, after re-reading both sides; returns the actions
    (planned only, when ``dry_run``: the ``plan`` mode of :func:`musicrec.audit.run.run_scope`)."""
    actions: list[dict[str, Any]] = []
    if plan.guard is not None and (reason := plan.guard()):
        actions.append({"scope": plan.scope, "store": "*", "action": "refused", "count": findings.total, "ids": [],
                        "reason": reason})
        return actions
    for fix in plan.structural_repairs:
        out = fix(dry_run)
        if out:
            actions.append({"scope": plan.scope, "ids": [], "count": 1} | out)
    if plan.expected_lookup is None:
        return actions
    cutoff = ctx.started - timedelta(minutes=grace_minutes)
    broken = {f.store for f in plan.structural}
    for target in plan.targets:
        if target.store in broken:
            continue
        for batch in findings.batches(target.store, batch_size):
            ids = [f.id for f in batch]
            want = plan.expected_lookup(ids)  # the catalog, re-checked now
            have = target.lookup(ids)
            # a duplicated id is rewritten (an upsert replaces every copy) or deleted whatever it holds
            dup = {f.id for f in batch if f.kind == "duplicate"}
            write = [i for i in ids if i in want and (want[i] != have.get(i) or i in dup)]
            orphans = [i for i in ids if i not in want and i in have and target.owns(i)]
            settled = [i for i in ids if i not in dup and want.get(i) == have.get(i)]
            _action(actions, plan.scope, target.store, "resolved_meanwhile", settled)
            seen = first_seen(ctx.db, plan.scope, target.store, orphans) if orphans else {}
            old = [i for i in orphans if seen.get(i, ctx.started) <= cutoff]
            young = [i for i in orphans if seen.get(i, ctx.started) > cutoff]
            _action(actions, plan.scope, target.store, "kept_within_grace", young,
                    grace_minutes=grace_minutes)
            for verb, fn, todo in (("upsert", target.upsert, write), ("delete", target.delete, old)):
                if not todo:
                    continue
                if fn is None:
                    _action(actions, plan.scope, target.store, "flagged", todo,
                            reason="no automatic repair for this store")
                elif dry_run:
                    _action(actions, plan.scope, target.store, verb, todo)
                else:
                    for act, done in fn(todo).items():
                        _action(actions, plan.scope, target.store, act, done)
            log.info("%s: %s: batch of %d findings: %d written, %d orphans removed, %d within grace, %d settled",
                     plan.scope, target.store, len(ids), len(write), len(old), len(young), len(settled))
    return actions


def check_collection(plan: ScopePlan, store: str, name: str, *, exists: bool, dim: int,
                     have_dim: Callable[[], int | None], rebuild: Callable[[], Any] | None, hint: str) -> bool:
    """Structural findings for collection ``name``: missing (repaired by ``rebuild`` when given, else
    flagged with ``hint``) or of another dimension (flagged: it cannot be fixed in place). True when
    the collection can be compared id by id."""
    if exists and (have := have_dim()) != dim:
        plan.structural.append(Finding(plan.scope, store, "dimension_mismatch", name, str(dim), str(have),
                                       detail="collection dimension differs from the model's"))
        plan.structural_repairs.append(lambda dry_run: {"store": store, "action": "flagged", "ids": [name],
                                                        "reason": f"wrong dimension: {hint}"})
        return False
    if exists:
        return True
    plan.structural.append(Finding(plan.scope, store, "missing", name, detail="collection missing"))

    def fix(dry_run: bool) -> dict[str, Any]:
        if rebuild is None:
            return {"store": store, "action": "flagged", "ids": [name], "reason": f"missing: {hint}"}
        if not dry_run:
            rebuild()
        return {"store": store, "action": "rebuild_collection", "ids": [name]}
    plan.structural_repairs.append(fix)
    return False


def check_alias(plan: ScopePlan, store: str, alias: str, want: str, have: str | None,
                swap: Callable[[], Any]) -> None:
    """A structural ``stale`` finding when ``alias`` does not point at ``want``; its repair calls ``swap``."""
    if have == want:
        return
    plan.structural.append(Finding(plan.scope, store, "stale", alias, want, have,
                                   detail="the alias does not point at the collection the model names"))

    def fix(dry_run: bool) -> dict[str, Any]:
        if not dry_run:
            swap()
        return {"store": store, "action": "swap_alias", "ids": [alias], "to": want}
    plan.structural_repairs.append(fix)


def chunks(items: list[str], size: int = IN_CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
