"""A MongoDB change stream read as debounced batches of ids, resumable (issue 18). No Airflow imports.

:func:`watch_batches` keeps a change stream on one collection open (pymongo's async client), keeps
the changes a :class:`WatchSpec` selects (operation types; for updates, the fields that matter),
gathers their ids until the stream has been quiet for ``debounce_s`` (or ``max_wait_s`` passed
since the first change, or ``max_batch`` ids are pending) and yields one :class:`Batch` of distinct
ids. The Airflow trigger (``musicrec_airflow.triggers.mongo_change_stream``) turns each batch into
one asset event.

**State in Mongo, not in Airflow's asset state.** Each batch is written to ``stream_batches``
(ids, the resume token after it) and the stream's token to ``stream_state`` *before* the batch is
handed on. Why Mongo: the token then lives in the same store as the changes (a restored backup
restores both together), the library and its tests run without Airflow, consumers read large id
lists from the batch document (events carry a marker, never large payloads), and a DAG marks a
batch served in the same place. A batch saved but not confirmed ``emitted`` (the triggerer died in
between) is handed on again at the next start; a batch is only emitted once it is marked, so a
restart neither loses a change nor repeats one, except in that window, where the consumer's
``served`` mark makes the repeat a no-op.

**Errors.** A stream error (server restart, failover, a network cut) closes the stream and reopens
it from the last saved token with exponential backoff (tenacity); a resume token the server no
longer has (the oplog rolled past it) is an error that needs a person, logged as such and raised.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_exponential

log = logging.getLogger(__name__)

STATE = "stream_state"
BATCHES = "stream_batches"
OPERATIONS = ("insert", "update", "replace", "delete")
# the server no longer holds the token's point in its history: resuming would silently skip changes
CHANGE_STREAM_HISTORY_LOST = 286


@dataclass(frozen=True)
class WatchSpec:
    """What to watch and how to batch it.

    :param name: the stream's name: key of its ``stream_state`` document (one per watcher).
    :param collection: the collection to watch.
    :param operations: operation types kept.
    :param fields: for updates, the dotted fields that matter (an update touching only others is
        dropped; a parent set as a whole counts, e.g. ``$set: {lyrics: {...}}`` for ``lyrics.plain``).
        Empty = every update.
    :param key: the field whose value is the batch's id: ``_id`` (the document key), or a field of
        the inserted/replaced document (``user_id`` for ``listen_events``).
    :param debounce_s: a batch closes once no change came for this long ...
    :param max_wait_s: ... or this long after its first change ...
    :param max_batch: ... or when it holds this many ids.
    """

    name: str
    collection: str
    operations: tuple[str, ...] = OPERATIONS
    fields: tuple[str, ...] = ()
    key: str = "_id"
    debounce_s: float = 2.0
    max_wait_s: float = 10.0
    max_batch: int = 1000

    def __post_init__(self) -> None:
        bad = set(self.operations) - set(OPERATIONS)
        if bad or not self.operations:
            raise ValueError(f"operations must be a non-empty subset of {OPERATIONS}, not {self.operations}")
        if self.debounce_s < 0 or self.max_wait_s < self.debounce_s or self.max_batch < 1:
            raise ValueError("need 0 <= debounce_s <= max_wait_s and max_batch >= 1")

    def pipeline(self) -> list[dict[str, Any]]:
        """The server-side filter: operation types, and for updates the top-level field of at least
        one watched field (the exact dotted check is :meth:`keeps`, since servers report nested
        updates either as ``a.b`` keys or as ``{a: {b: …}}``)."""
        match: dict[str, Any] = {"operationType": {"$in": list(self.operations)}}
        stages: list[dict[str, Any]] = [{"$match": match}]
        if self.fields and "update" in self.operations:
            roots = sorted({f.split(".")[0] for f in self.fields})
            pattern = "^(" + "|".join(r.replace(".", r"\.") for r in roots) + r")(\.|$)"
            stages += [
                {"$addFields": {"_mr_changed": {"$objectToArray": {
                    "$ifNull": ["$updateDescription.updatedFields", {}]}}}},
                {"$match": {"$or": [{"operationType": {"$ne": "update"}},
                                    {"_mr_changed.k": {"$regex": pattern}},
                                    {"updateDescription.removedFields": {"$regex": pattern}}]}},
                {"$project": {"_mr_changed": 0}},
            ]
        return stages

    def keeps(self, change: Mapping[str, Any]) -> bool:
        if change.get("operationType") not in self.operations:
            return False
        if change["operationType"] != "update" or not self.fields:
            return True
        desc = change.get("updateDescription") or {}
        touched = set(_paths(desc.get("updatedFields") or {})) | set(desc.get("removedFields") or [])
        return any(_overlaps(path, f) for path in touched for f in self.fields)

    def id_of(self, change: Mapping[str, Any]) -> Any:
        if self.key == "_id":
            return (change.get("documentKey") or {}).get("_id")
        doc = change.get("fullDocument") or {}
        return doc.get(self.key)


def _paths(fields: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of an ``updatedFields`` document, nested sub-documents expanded (a server that
    reports ``{lyrics: {plain: …}}`` for ``$set: {"lyrics.plain": …}`` then reads like one that
    reports ``lyrics.plain``)."""
    out = []
    for k, v in fields.items():
        path = f"{prefix}{k}"
        # a non-empty sub-document stands for its leaves only: SecantusDB reports ``$set
        # {"lyrics.sha256": …}`` as ``{lyrics: {sha256: …}}``, which must not read as "all of lyrics"
        out += _paths(v, path + ".") if isinstance(v, Mapping) and v else [path]
    return out


def _overlaps(path: str, watched: str) -> bool:
    """A change to ``path`` touches ``watched`` when one is the other or its ancestor."""
    return path == watched or watched.startswith(path + ".") or path.startswith(watched + ".")


@dataclass
class Batch:
    """Distinct ids changed since the previous batch (in arrival order), with the token after them."""

    stream: str
    id: str
    ids: list[Any]
    token: Mapping[str, Any] | None
    ops: dict[str, int] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def document(self) -> dict[str, Any]:
        return {"_id": self.id, "stream": self.stream, "ids": self.ids, "count": len(self.ids),
                "ops": self.ops, "token": self.token, "created_at": self.created_at,
                "emitted_at": None, "served_at": None}


def batch_id(stream: str, start_token: Mapping[str, Any] | None, first_change: Mapping[str, Any]) -> str:
    """Deterministic: the same stream position gives the same id (a replay after a crash upserts
    the same document instead of making a second one)."""
    blob = f"{stream}\t{start_token!r}\t{first_change.get('_id')!r}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- state (async database)

async def load_token(db: Any, stream: str) -> Mapping[str, Any] | None:
    doc = await db[STATE].find_one({"_id": stream})
    return (doc or {}).get("token")


async def save_batch(db: Any, batch: Batch) -> bool:
    """The batch first, then the stream's token: a crash in between replays into the same batch id.
    False when that batch was already emitted (it must not be handed on twice)."""
    before = await db[BATCHES].find_one_and_update({"_id": batch.id}, {"$setOnInsert": batch.document()},
                                                   upsert=True)
    await db[STATE].update_one({"_id": batch.stream},
                               {"$set": {"token": batch.token, "updated_at": datetime.now(UTC),
                                         "last_batch": batch.id},
                                "$inc": {"batches": 1, "ids": len(batch.ids)}}, upsert=True)
    return before is None or before.get("emitted_at") is None


async def mark_emitted(db: Any, batch: Batch) -> None:
    """The consumer has handed the batch on: it will not be yielded again."""
    await db[BATCHES].update_one({"_id": batch.id}, {"$set": {"emitted_at": datetime.now(UTC)}})


async def unemitted(db: Any, stream: str) -> list[Batch]:
    """Batches saved but never confirmed handed on (the process stopped in between), oldest first."""
    out = []
    async for d in db[BATCHES].find({"stream": stream, "emitted_at": None}).sort([("created_at", 1), ("_id", 1)]):
        out.append(Batch(stream=stream, id=d["_id"], ids=list(d["ids"]), token=d.get("token"),
                         ops=dict(d.get("ops") or {}), created_at=d["created_at"]))
    return out


# ----------------------------------------------------------------------------- the stream

def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, OperationFailure) and exc.code == CHANGE_STREAM_HISTORY_LOST:
        log.error("change stream: the saved resume token is no longer in the server's history; changes "
                  "were missed. Run the consumers' scheduled run (the safety net), then delete the "
                  "stream's document in %s to start from now", STATE)
        return False
    return isinstance(exc, PyMongoError)


async def watch_batches(db: Any, spec: WatchSpec, *, poll_ms: int = 250, backoff_max_s: float = 30.0,
                        clock: Callable[[], float] = time.monotonic,
                        on_error: Callable[[BaseException], None] | None = None) -> AsyncIterator[Batch]:
    """Yield batches forever (cancel the task to stop). ``db`` is a pymongo ``AsyncDatabase``.

    Each batch is saved (:func:`save_batch`) before it is yielded; the caller calls
    :func:`mark_emitted` once it has handed the batch on. Batches saved but never marked (the
    process stopped in between) are yielded first at the next start.
    """
    for batch in await unemitted(db, spec.name):
        log.info("change stream %s: handing on batch %s saved before a restart (%d ids)", spec.name, batch.id,
                 len(batch.ids))
        yield batch

    async for attempt in AsyncRetrying(retry=retry_if_exception(_retryable), stop=stop_never, reraise=True,
                                       wait=wait_exponential(multiplier=0.5, max=backoff_max_s)):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                log.warning("change stream %s: reopening after an error (attempt %d)", spec.name,
                            attempt.retry_state.attempt_number)
            try:
                async for batch in _stream_once(db, spec, poll_ms, clock):
                    yield batch
            except PyMongoError as exc:
                if on_error:
                    on_error(exc)
                log.warning("change stream %s: %s", spec.name, exc)
                raise


async def _stream_once(db: Any, spec: WatchSpec, poll_ms: int, clock: Callable[[], float]
                       ) -> AsyncIterator[Batch]:
    token = await load_token(db, spec.name)
    kwargs: dict[str, Any] = {"max_await_time_ms": poll_ms}
    if token:
        kwargs["resume_after"] = token
    if spec.key != "_id":
        kwargs["full_document"] = "updateLookup"  # updates carry the document, so its key can be read
    async with await db[spec.collection].watch(spec.pipeline(), **kwargs) as stream:
        if token is None and stream.resume_token is not None:
            # the first start: pin "now" at once, so a stream error before the first batch reopens
            # from here instead of from a later "now" (which would skip the changes in between)
            token = stream.resume_token
            await db[STATE].update_one({"_id": spec.name}, {"$set": {"token": token, "updated_at": datetime.now(UTC)}},
                                       upsert=True)
        pending: dict[Any, None] = {}
        ops: dict[str, int] = {}
        first: Mapping[str, Any] | None = None
        start_token = token
        first_at = last_at = 0.0
        while True:
            change = await stream.try_next()
            now = clock()
            if change is not None and spec.keeps(change) and (key := spec.id_of(change)) is not None:
                if first is None:
                    first, first_at = change, now
                pending[key] = None
                ops[change["operationType"]] = ops.get(change["operationType"], 0) + 1
                last_at = now
            if first is None:
                continue
            waited, full = now - first_at >= spec.max_wait_s, len(pending) >= spec.max_batch
            quiet = change is None and now - last_at >= spec.debounce_s
            if not (quiet or full or waited):
                continue
            batch = Batch(stream=spec.name, id=batch_id(spec.name, start_token, first), ids=list(pending),
                          token=stream.resume_token, ops=ops)
            if await save_batch(db, batch):
                yield batch
            start_token, first, pending, ops = batch.token, None, {}, {}


def inline_payload(batch: Batch, inline_max: int = 100) -> dict[str, Any]:
    """The small event payload of a batch: the ids themselves when there are few, else only the
    marker (the batch document in ``stream_batches`` holds them)."""
    payload: dict[str, Any] = {"stream": batch.stream, "batch": batch.id, "count": len(batch.ids),
                               "ops": dict(batch.ops)}
    if len(batch.ids) <= inline_max:
        payload["ids"] = [str(i) for i in batch.ids]
    return payload


def batch_ids(db: Any, payloads: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of asset-event payloads (sync ``Database``): inline ids, or those of the batch
    document a marker names; distinct, in order. Payloads that are not ours are ignored."""
    out: dict[str, None] = {}
    for p in payloads:
        if not isinstance(p, Mapping) or not isinstance(p.get("batch"), str):
            continue
        ids = p.get("ids")
        if not isinstance(ids, list):
            doc = db[BATCHES].find_one({"_id": p["batch"]}, {"ids": 1}) or {}
            ids = doc.get("ids") or []
        for i in ids:
            if isinstance(i, str):
                out[i] = None
    return list(out)


def watched_ids(db: Any, extras: Sequence[Mapping[str, Any]], stream: str) -> list[str] | None:
    """The ids a DAG run should work on, from the ``extra`` of its triggering asset events: the
    union of this stream's batches when every event is one of them; ``None`` (= do everything, the
    safety net) for a run with no events (scheduled, manual) or with any other event."""
    payloads = []
    for extra in extras:
        payload = (extra or {}).get("payload") if (extra or {}).get("from_trigger") else None
        if not isinstance(payload, Mapping) or payload.get("stream") != stream:
            return None
        payloads.append(payload)
    return batch_ids(db, payloads) if payloads else None


def mark_served(db: Any, payloads: Sequence[Mapping[str, Any]], run_id: str) -> int:
    """Record that a run served these batches (sync ``Database``)."""
    ids = [p["batch"] for p in payloads if isinstance(p, Mapping) and isinstance(p.get("batch"), str)]
    if not ids:
        return 0
    return db[BATCHES].update_many({"_id": {"$in": ids}, "served_at": None},
                                   {"$set": {"served_at": datetime.now(UTC), "served_by": run_id}}).modified_count
