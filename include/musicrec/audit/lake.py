"""Lake scope (design §4): ``lake_partitions`` + ``models.artifacts`` are the truth for the lake.

Expected: every file either names, fingerprint ``<bytes>:<sha256>`` (``<bytes>`` alone when
checksums are off). Actual: a listing of the registry-managed prefixes (``listens/``, ``profiles/``,
``models/``, ``embeddings/``) plus the top folder of any registered file outside them, each file
hashed (streamed, bounded memory). A file under a managed prefix that nothing names is an
``orphan``; unknown files elsewhere (``raw/``, ``work/``, ``audit/`` …) are not the registry's business.
A fingerprint difference is a ``size_mismatch`` when the sizes differ, else a ``checksum_mismatch``.

Repair: a missing or damaged file is re-uploaded from a local copy whose sha256 matches the
registry (the staging cache ``<staging>/lake-cache/<sha[:2]>/<sha>/<path>`` that lake readers fill on
S3), else it is *flagged* (``audit_state`` + the report: re-run its producer). An orphan older than
``grace_minutes`` (age = the object's mtime, or when the audit first saw it if later) whose path the
registry still does not name is *moved* to ``audit/<run_id>/orphans/<path>`` (kept, never lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from musicrec import registry
from musicrec.audit.core import IN_CHUNK, AuditContext, ScopePlan, Target, chunks
from musicrec.lake import storage
from musicrec.settings import staging_dir

log = logging.getLogger(__name__)

MANAGED_PREFIXES = ("listens/", "profiles/", "models/", "embeddings/")
MODELS = "models"


def run_path(run_id: str) -> str:
    """``audit/<run_id>``; characters outside ``[A-Za-z0-9._=-]`` become ``_`` (run ids carry ``:``/``+``)."""
    safe = "".join(c if c.isalnum() or c in "._=-" else "_" for c in run_id)
    return f"audit/{safe}"


def managed(rel: str) -> bool:
    return rel.startswith(MANAGED_PREFIXES)


def _fp(size: int | None, sha: str | None, checksums: bool) -> str:
    return f"{size}:{sha}" if checksums else f"{size}"


def _classify(expected: str, actual: str) -> str:
    return "size_mismatch" if expected.split(":")[0] != actual.split(":")[0] else "checksum_mismatch"


def _artifacts(db) -> Iterator[dict[str, Any]]:
    for doc in db[MODELS].find({"artifacts": {"$exists": True}}, {"artifacts": 1}):
        for art in doc.get("artifacts") or []:
            if art.get("path"):
                yield art


def plans(ctx: AuditContext) -> list[ScopePlan]:
    db, root, checksums = ctx.db, ctx.root, ctx.lake_checksums
    coll = db[registry.COLLECTION]
    # models.artifacts the registry does not also name (a handful: models are few)
    extra = {a["path"]: a for a in _artifacts(db)}
    for part in chunks(sorted(extra)):
        for d in coll.find({"_id": {"$in": part}}, {"_id": 1}):
            extra.pop(d["_id"], None)
    tops = sorted({p.split("/", 1)[0] + "/" for p in extra} | set(MANAGED_PREFIXES))
    for d in coll.aggregate([{"$project": {"top": {"$arrayElemAt": [{"$split": ["$_id", "/"]}, 0]}}},
                             {"$group": {"_id": "$top"}}]):
        if d["_id"]:
            tops.append(d["_id"] + "/")
    tops = sorted(set(tops))

    def expected() -> Iterator[tuple[str, str]]:
        for d in coll.find({}, {"bytes": 1, "sha256": 1}, batch_size=5000):
            yield d["_id"], _fp(d.get("bytes"), d.get("sha256"), checksums)
        for path, art in extra.items():
            yield path, _fp(art.get("bytes"), art.get("sha256"), checksums)

    def expected_lookup(ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in chunks(ids, IN_CHUNK):
            for d in coll.find({"_id": {"$in": part}}, {"bytes": 1, "sha256": 1}):
                out[d["_id"]] = _fp(d.get("bytes"), d.get("sha256"), checksums)
            missing = [p for p in part if p not in out]
            if missing:
                for doc in db[MODELS].find({"artifacts.path": {"$in": missing}}, {"artifacts": 1}):
                    for art in doc.get("artifacts") or []:
                        if art.get("path") in missing:
                            out[art["path"]] = _fp(art.get("bytes"), art.get("sha256"), checksums)
        return out

    def listing() -> Iterator[tuple[str, dict[str, Any]]]:
        base = root.path.rstrip("/")
        fs = root.fs
        for top in tops:
            prefix = f"{base}/{top}"
            if not fs.exists(prefix):
                continue
            for path, info in sorted(fs.find(prefix, detail=True).items()):
                if info.get("type", "file") != "file":
                    continue
                yield path[len(base) + 1:] if path.startswith(base + "/") else storage.relative(root / path, root), info

    def fingerprint(rel: str, size: int | None) -> str:
        if not checksums:
            return _fp(size, None, False)
        info = storage.sha256_lake(root / rel)
        return _fp(info.bytes, info.sha256, True)

    def stream() -> Iterator[tuple[str, str]]:
        for n, (rel, info) in enumerate(listing(), 1):
            if n % 1000 == 0:
                log.info("lake: %d files listed and hashed", n)
            yield rel, fingerprint(rel, info.get("size"))

    def lookup(ids: list[str]) -> dict[str, str]:
        out = {}
        for rel in ids:
            try:
                size = root.fs.info((root / rel).path)["size"]
            except (FileNotFoundError, OSError):
                continue
            out[rel] = fingerprint(rel, size)
        return out

    def ages(ids: list[str]) -> dict[str, datetime]:
        out = {}
        for rel in ids:
            try:
                info = root.fs.info((root / rel).path)
            except (FileNotFoundError, OSError):
                continue
            when = _mtime(info)
            if when is not None:
                out[rel] = when
        return out

    def upsert(ids: list[str]) -> dict[str, list[str]]:
        want = {}
        for part in chunks(ids):
            want.update({d["_id"]: d for d in coll.find({"_id": {"$in": part}}, {"bytes": 1, "sha256": 1})})
        for art in _artifacts(db):
            if art["path"] in ids and art["path"] not in want:
                want[art["path"]] = {"_id": art["path"], "bytes": art.get("bytes"), "sha256": art.get("sha256")}
        done, flagged = [], []
        for rel in ids:
            copy = _cached_copy(rel, want.get(rel, {}).get("sha256"))
            if copy is None:
                flagged.append(rel)
                continue
            storage.publish_file(copy, root / rel, keep_source=True)
            done.append(rel)
        if flagged:
            log.warning("lake: no verified copy of %d damaged/missing files: flagged (re-run their producer): %s",
                        len(flagged), flagged[:10])
        return {"reupload": done, "flagged_no_copy": flagged}

    def delete(ids: list[str]) -> dict[str, list[str]]:
        dest = run_path(ctx.run_id) + "/orphans"
        moved = []
        for rel in ids:
            src = root / rel
            if not src.exists():
                continue
            tmp = staging_dir() / "audit-orphans" / rel
            storage.fetch_to_local(src, tmp)
            storage.publish_file(tmp, root / f"{dest}/{rel}")
            storage.delete(src)
            moved.append(rel)
        return {"moved_to_" + dest: moved}

    plan = ScopePlan("lake", expected_name="registry", expected=expected, expected_lookup=expected_lookup,
                     info={"prefixes": tops, "checksums": checksums})
    plan.targets.append(Target("lake", stream=stream, lookup=lookup, upsert=upsert, delete=delete,
                               classify=_classify, owns=managed, ages=ages))
    return [plan]


def _mtime(info: dict[str, Any]) -> datetime | None:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


def _cached_copy(rel: str, sha: str | None) -> Path | None:
    """A local copy of ``rel`` with the registered sha256, from the lake readers' staging cache."""
    if not sha:
        return None
    path = staging_dir() / "lake-cache" / sha[:2] / sha / rel
    if path.exists() and storage.sha256_file(path).sha256 == sha:
        return path
    return None
