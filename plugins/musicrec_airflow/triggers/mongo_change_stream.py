"""A MongoDB change stream as an Airflow event trigger (issue 18): one asset event per debounced batch.

The stream logic (filter, debounce, resume token in Mongo ``stream_state``, backoff on errors) is the
library's :mod:`musicrec.events.stream`; this adapter resolves the connection, builds the async
database through the store factory and turns each batch into a :class:`TriggerEvent` whose payload
is small: the changed ids when there are at most ``inline_max``, else only a marker (``batch``, the
``stream_batches`` document that holds them). Consumers read ids with
:func:`musicrec.events.stream.batch_ids`.

Used by ``AssetWatcher``s in :mod:`musicrec_airflow.assets`; only a running triggerer serves them
(``airflow standalone`` has one, ``airflow dags test`` has none). MongoDB must be a replica set (one
node is enough) or SecantusDB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from musicrec import stores
from musicrec.events import stream


class MongoChangeStreamTrigger(BaseEventTrigger):
    """Watches ``collection`` and fires once per debounced batch of changed ids.

    :param name: the stream's name, the key of its resume token in ``stream_state`` (one per watcher;
        renaming it starts from "now").
    :param collection: the collection to watch.
    :param operations: operation types kept (insert, update, replace, delete).
    :param fields: for updates, the dotted fields that matter; empty = every update.
    :param key: ``_id`` or a field of the inserted document whose value is the batch's id.
    :param debounce_s: a batch closes after this long without a change ...
    :param max_wait_s: ... or this long after its first change ...
    :param max_batch: ... or at this many ids.
    :param inline_max: ids carried in the event itself at most (else a marker).
    :param poll_ms: how long one server wait for changes lasts.
    :param mongo_conn_id: the MongoDB connection (conn type ``mongo``; database = the conn schema).
    """

    def __init__(self, *, name: str, collection: str, operations: list[str] | tuple[str, ...] = stream.OPERATIONS,
                 fields: list[str] | tuple[str, ...] = (), key: str = "_id", debounce_s: float = 2.0,
                 max_wait_s: float = 10.0, max_batch: int = 1000, inline_max: int = 100, poll_ms: int = 500,
                 mongo_conn_id: str = "mongo_default") -> None:
        super().__init__()
        self.name = name
        self.collection = collection
        self.operations = list(operations)
        self.fields = list(fields)
        self.key = key
        self.debounce_s = float(debounce_s)
        self.max_wait_s = float(max_wait_s)
        self.max_batch = int(max_batch)
        self.inline_max = int(inline_max)
        self.poll_ms = int(poll_ms)
        self.mongo_conn_id = mongo_conn_id
        self.spec()  # a bad configuration fails when the DAG file is parsed, not in the triggerer

    def spec(self) -> stream.WatchSpec:
        return stream.WatchSpec(name=self.name, collection=self.collection, operations=tuple(self.operations),
                                fields=tuple(self.fields), key=self.key, debounce_s=self.debounce_s,
                                max_wait_s=self.max_wait_s, max_batch=self.max_batch)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "name": self.name, "collection": self.collection, "operations": self.operations, "fields": self.fields,
            "key": self.key, "debounce_s": self.debounce_s, "max_wait_s": self.max_wait_s,
            "max_batch": self.max_batch, "inline_max": self.inline_max, "poll_ms": self.poll_ms,
            "mongo_conn_id": self.mongo_conn_id})

    async def database(self) -> Any:
        """The async database of ``mongo_conn_id``: the connection's fields → URI (the factory's
        :func:`musicrec.stores.mongo_uri`, as the sync hooks build it) → :func:`async_mongo_database`."""
        conn = await BaseHook.aget_connection(self.mongo_conn_id)
        if conn.conn_type not in ("mongo", "mongodb"):
            raise ValueError(f"connection {self.mongo_conn_id} has conn type {conn.conn_type!r}, not mongo")
        uri = stores.mongo_uri(host=conn.host, port=conn.port, login=conn.login, password=conn.password,
                               extra=conn.extra_dejson)
        return stores.async_mongo_database(uri, conn.schema or stores.DEFAULT_DB)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        db = await self.database()
        try:
            async for batch in stream.watch_batches(db, self.spec(), poll_ms=self.poll_ms):
                self.log.info("change stream %s: batch %s, %d ids %s", self.name, batch.id, len(batch.ids),
                              batch.ops)
                yield TriggerEvent(stream.inline_payload(batch, self.inline_max))
                # the triggerer has taken the event when it asks for the next one
                await stream.mark_emitted(db, batch)
        finally:
            await db.client.close()


def triggering_extras(context: Any) -> list[dict[str, Any]]:
    """The ``extra`` of every asset event that triggered the task's DAG run (``[]`` for a run
    without any: scheduled, manual, backfill); feed it to :func:`musicrec.events.stream.watched_ids`."""
    events = context.get("triggering_asset_events") or {}
    return [dict(e.extra or {}) for evs in events.values() for e in evs]
