"""Roll the ALS model back (or forward) to a retained version (issue 17, DAG ``als_rollback``).

A *retained* version is a retired model whose collection the publish kept (``publish.cleanup`` keeps the
active version's and the one it replaced). Rolling back is a publish without the writes: the version's
collection, its artifacts and its users' vectors (``users.latent_vectors.<version>``) are all still
there, so only the last two publish steps run, through publish's own functions:

1. ``swap``: the alias moves to the version's collection in every store (the serving one first) —
   the flip: readers take the version from the alias target and read that version's user vectors, so
   items and users switch together, exactly as after a publish;
2. ``activate``: the version becomes ``active`` (remembering the model it replaced, so a roll-forward
   is the same roll-back the other way), the other one ``retired``; ``cleanup`` as after a publish.

Before anything moves, :func:`check` refuses a version that cannot be served as it was published: not a
retired ALS model, its collection gone from any store, its artifacts missing or not what the registry
recorded, or findings of the store audit's ALS scope (``musicrec.audit.als``) on it — the same checks
the daily audit makes of the active model, here on the version about to become active. A re-run after
a kill between the two steps finds the alias already moved and completes the activation.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.database import Database

from musicrec import registry
from musicrec.als import publish
from musicrec.als.model import MODELS
from musicrec.als.params import ALIAS, collection_name, version_of
from musicrec.audit import als as audit_als
from musicrec.audit import core
from musicrec.lake import storage
from musicrec.lake.storage import LakePath
from musicrec.vectors import as_stores

log = logging.getLogger(__name__)

ARTIFACT_KINDS = ("item_factors", "user_factors")


class RollbackRefused(Exception):
    """The version must not be served; the message says why."""


def retained(db: Database, stores: Any) -> list[str]:
    """Retired ALS versions whose collection the serving store still holds, newest window first."""
    serving = as_stores(stores)[0]
    have = {version_of(n) for n in serving.versions(ALIAS)}
    docs = [d for d in db[MODELS].find({"kind": "als", "status": "retired"}, {"window": 1}) if d["_id"] in have]
    docs.sort(key=lambda d: (str((d.get("window") or {}).get("end")), d["_id"]), reverse=True)
    return [d["_id"] for d in docs]


def default_target(db: Database, stores: Any) -> str | None:
    """The version a roll-back without ``to_version`` goes to: the one the active model replaced when it
    is retained, else the newest retained one; None when there is none."""
    keep = retained(db, stores)
    active = publish.active_model(db)
    previous = (active or {}).get("previous_version")
    if previous in keep:
        return previous
    return keep[0] if keep else None


def check(db: Database, root: LakePath, stores: Any, version: str, *, checksums: bool = True) -> dict[str, Any]:
    """Why ``version`` may be served again (returned: what was checked) or :class:`RollbackRefused`."""
    stores_ = as_stores(stores)
    doc = db[MODELS].find_one({"_id": version})
    if doc is None or doc.get("kind") != "als":
        raise RollbackRefused(f"no ALS model {version!r}")
    if doc.get("status") not in ("retired", "active"):
        raise RollbackRefused(f"model {version} is {doc.get('status')}: it was never published (publish it with "
                              "als_training; a roll-back only goes back to a version that was served)")
    name = doc.get("collection") or collection_name(version)
    dim = int(doc["params"]["factors"])
    for store in stores_:
        if not store.has_collection(name):
            raise RollbackRefused(f"the collection {name} of model {version} is gone from {store.kind}: "
                                  "retrain instead (als_training)")
        if (have := store.collection_dim(name)) != dim:
            raise RollbackRefused(f"{store.kind}:{name} has dim {have}, the model {dim}")
    arts = {a.get("kind"): a for a in doc.get("artifacts") or []}
    for kind in ARTIFACT_KINDS:
        art = arts.get(kind)
        if art is None:
            raise RollbackRefused(f"model {version} lists no {kind} artifact")
        path = root / art["path"]
        reg = registry.get(db, art["path"])
        if not path.exists() or reg is None or reg.get("sha256") != art.get("sha256"):
            raise RollbackRefused(f"the artifact {art['path']} of model {version} is gone or not the one "
                                  "published (see store_audit's lake scope)")
        if checksums and storage.sha256_lake(path).sha256 != art.get("sha256"):
            raise RollbackRefused(f"the artifact {art['path']} of model {version} does not match its sha256")
    findings = audit(db, root, stores_, doc)
    if findings:
        raise RollbackRefused(f"the store audit's ALS scope finds model {version} damaged: {findings} "
                              "(run store_audit; repair only ever fixes the active model)")
    return {"version": version, "collection": name, "dim": dim, "stores": [s.kind for s in stores_]}


def audit(db: Database, root: LakePath, stores: Any, doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The ALS scope's findings on model ``doc`` per store and kind, except the alias's: it serves another
    version until the swap (that is the roll-back's job)."""
    ctx = core.AuditContext(db=db, root=root, stores=as_stores(stores), run_id=f"rollback-{doc['_id']}")
    out: dict[str, dict[str, int]] = {}
    for plan in audit_als.model_plans(ctx, doc):
        findings, _ = core.audit(plan, ctx)
        try:
            for (store, kind), n in findings.counts.items():
                if store.endswith(f":alias {ALIAS}"):
                    continue
                out.setdefault(store, {})[kind] = n
        finally:
            findings.close()
    return out


def rollback(db: Database, root: LakePath, stores: Any, to_version: str | None = None, *,
             checksums: bool = True) -> dict[str, Any]:
    """Serve ``to_version`` (default :func:`default_target`) again: :func:`check`, then publish's swap and
    activate-and-cleanup. Returns what moved; nothing moves when the version already serves."""
    stores_ = as_stores(stores)
    version = (to_version or "").strip() or default_target(db, stores_)
    if not version:
        raise RollbackRefused("no retained ALS version to roll back to")
    checked = check(db, root, stores_, version, checksums=checksums)
    name = checked["collection"]
    active = publish.active_model(db)
    if active is not None and active["_id"] == version and all(s.alias_target(ALIAS) == name for s in stores_):
        log.info("model %s already serves: nothing to roll back", version)
        return checked | {"changed": False, "previous": version}
    swap = publish.swap_aliases(stores_, version, checked["dim"], name)
    out = publish.activate_and_cleanup(db, stores_, version, name)
    log.info("rolled back to %s (alias %s: %s -> %s)", version, ALIAS, swap.get("previous"), name)
    return checked | {"changed": True, "previous": active["_id"] if active else None, "swap": swap,
                      "activate": out}
