"""Thin operators of ``lyrics_enrichment``: resolve the provider and connections; call ``musicrec.lyrics``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowSkipException

from musicrec.lyrics import dump as lyrics_dump
from musicrec.lyrics import enrich, queue
from musicrec_airflow.hooks.lrclib import LrclibHook
from musicrec_airflow.operators.base import MongoStep
from musicrec_airflow.sources import allowed_sources, refusals_fail

DUMP_VARIABLE = "musicrec_lrclib_dump"
PROVIDERS = ("auto", "api", "dump")


def dump_path(param: str | None) -> str:
    """The dump file: the param, else Variable ``musicrec_lrclib_dump``, else ''."""
    return (param or "").strip() or (Variable.get(DUMP_VARIABLE, default="") or "").strip()


def max_unpacked(value: int | str) -> int:
    return int(value) if str(value).strip() else lyrics_dump.DEFAULT_MAX_UNPACKED_BYTES


def resolve_provider(provider: str, dump: str) -> str:
    if provider not in PROVIDERS:
        raise ValueError(f"provider {provider!r}: one of {PROVIDERS}")
    if provider == "auto":
        return "dump" if dump and Path(dump).exists() else "api"
    if provider == "dump" and not dump:
        raise ValueError(f"provider dump needs param dump_path or Variable {DUMP_VARIABLE}")
    return provider


class LyricsPlanOperator(MongoStep):
    """Plans chunks of the pending queue (popularity order) for one provider: returns their bounds
    (small) when ``provider`` resolves to ``for_provider``, else ``[]`` (its mapped fetch is skipped).
    For the dump it first unpacks a ``.gz`` and builds the lookup index beside it (once per dump).

    :param for_provider: the provider this task plans for (``dump`` or ``api``).
    :param provider: the run's provider: ``auto`` (the dump when it exists, else the API), ``api`` or ``dump``.
    :param max_songs: songs planned at most.
    :param max_chunks: chunks (mapped fetch tasks) at most.
    :param max_attempts: songs tried this often are no longer planned.
    :param dump_path: the LRCLIB dump; empty = Variable ``musicrec_lrclib_dump``.
    :param max_unpacked_bytes: refuse a ``.gz`` dump that unpacks to more.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("provider", "max_songs", "max_chunks", "max_attempts", "dump_path",
                                      "max_unpacked_bytes")

    def __init__(self, *, for_provider: str, provider: str = "auto", max_songs: int | str = 100000,
                 max_chunks: int | str = 4, max_attempts: int | str = 5, dump_path: str = "",
                 max_unpacked_bytes: int | str = lyrics_dump.DEFAULT_MAX_UNPACKED_BYTES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.for_provider, self.provider, self.max_songs, self.max_chunks = for_provider, provider, max_songs, max_chunks
        self.max_attempts, self.dump_path = max_attempts, dump_path
        self.max_unpacked_bytes = max_unpacked_bytes

    def execute(self, context: Any) -> list[dict[str, Any]]:
        dump = dump_path(self.dump_path)
        provider = resolve_provider(str(self.provider), dump)
        if provider != self.for_provider:
            self.log.info("provider is %s: nothing for %s", provider, self.for_provider)
            return []
        if provider == "dump":  # checked, unpacked and indexed here, once, before the mapped chunks open it
            with refusals_fail():
                ready = lyrics_dump.prepare(dump, allowed=allowed_sources(),
                                            max_unpacked_bytes=max_unpacked(self.max_unpacked_bytes))
            self.log.info("dump ready: %s", ready)
        db = self.db
        queue.ensure_indexes(db)
        chunks = queue.plan(db, max_songs=int(self.max_songs), max_chunks=int(self.max_chunks),
                            max_attempts=int(self.max_attempts))
        self.log.info("lyrics queue: %d pending songs in %d chunks, provider %s%s; store now: %s",
                      sum(c.songs for c in chunks), len(chunks), provider, f" ({dump})" if provider == "dump" else "",
                      queue.status_counts(db))
        return [c.as_dict() for c in chunks]


class LyricsFetchOperator(MongoStep):
    """One chunk through the dump or the API (mapped over the plan's chunks).

    :param provider: ``dump`` or ``api`` (this task's).
    :param chunk: the chunk's bounds (one of the plan's XCom items).
    :param dump_path: the LRCLIB dump; empty = Variable ``musicrec_lrclib_dump``.
    :param base_url: the API base; empty = the connection's.
    :param rate_per_s: API requests per second; empty = the connection's (default 2).
    :param concurrency: API requests in flight.
    :param max_unpacked_bytes: refuse a ``.gz`` dump that unpacks to more.
    :param lrclib_conn_id: the LRCLIB connection.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("chunk", "dump_path", "base_url", "rate_per_s", "concurrency",
                                      "max_unpacked_bytes")

    def __init__(self, *, provider: str, chunk: dict[str, Any] | None = None, dump_path: str = "",
                 base_url: str = "", rate_per_s: float | str = 2.0, concurrency: int | str = 4,
                 max_unpacked_bytes: int | str = lyrics_dump.DEFAULT_MAX_UNPACKED_BYTES,
                 lrclib_conn_id: str = LrclibHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provider, self.chunk, self.dump_path, self.base_url = provider, chunk, dump_path, base_url
        self.max_unpacked_bytes = max_unpacked_bytes
        self.rate_per_s, self.concurrency = rate_per_s, concurrency
        self.lrclib_conn_id = lrclib_conn_id

    @cached_property
    def hook(self) -> LrclibHook:
        return LrclibHook(self.lrclib_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        with refusals_fail():
            return self._execute()

    def _execute(self) -> dict[str, Any]:
        chunk = queue.Chunk.from_dict(self.chunk or {})
        db = self.db
        if self.provider == "dump":
            return enrich.run_dump_chunk(db, chunk, dump_path(self.dump_path), allowed=allowed_sources(),
                                         max_unpacked_bytes=max_unpacked(self.max_unpacked_bytes))
        settings = self.hook.settings()
        base = (self.base_url or "").strip() or settings["base_url"]
        rate = float(self.rate_per_s) if str(self.rate_per_s).strip() != "" else settings.get("rate_per_s", 2.0)
        self.log.info("LRCLIB API %s, %.2f requests/s, concurrency %s", base, rate, self.concurrency)
        # base_url (param or connection) is checked against the allow-list before any request
        return enrich.run_api_chunk(db, chunk, base, rate_per_s=rate, concurrency=int(self.concurrency),
                                    timeout_s=settings.get("timeout_s", 10.0), allowed=allowed_sources())


class LyricsReportOperator(MongoStep):
    """Store-wide status counts after the chunks; skips (no ``mongo_lyrics`` event) when nothing ran.

    :param plan_task_ids: the plan tasks whose XCom lists this run's chunks.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    def __init__(self, *, plan_task_ids: Sequence[str] = ("plan_dump", "plan_api"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_ids = list(plan_task_ids)

    def execute(self, context: Any) -> dict[str, Any]:
        planned = sum(c["songs"] for t in self.plan_task_ids for c in (context["ti"].xcom_pull(task_ids=t) or []))
        counts = queue.status_counts(self.db)
        self.log.info("lyrics: %d songs planned this run; store: %s", planned, counts)
        if not planned:
            raise AirflowSkipException(f"no pending songs; store: {counts}")
        return counts
