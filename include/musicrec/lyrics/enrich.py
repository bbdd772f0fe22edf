"""One chunk of the lyrics queue through a provider, results written as they come.

Results go to MongoDB in small bulk writes (every ``flush_every`` results or ``flush_s`` seconds),
so a killed task loses at most the requests in flight and the unflushed handful; the re-run's
chunk query no longer selects what was written. Progress (done/total, statuses, rate, ETA) is
logged every ``progress_s`` seconds.

``dump_path`` and ``base_url`` are untrusted (trigger form, Variable, connection): with an
allow-list (``allowed``, Variable ``musicrec_allowed_sources``) they are checked here, before anything
is opened or requested (:mod:`musicrec.sources`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from musicrec.lyrics import queue
from musicrec.lyrics.dump import DEFAULT_MAX_UNPACKED_BYTES, DumpProvider
from musicrec.lyrics.lrclib import LrclibApi
from musicrec.lyrics.match import Outcome, Song
from musicrec.sources import Allowed, check_url

log = logging.getLogger(__name__)


class ResultWriter:
    """Buffers lyrics updates and flushes them in bulk; tracks progress."""

    def __init__(self, db: Database, total: int, *, flush_every: int = 25, flush_s: float = 1.0,
                 progress_s: float = 10.0, label: str = "lyrics") -> None:
        self.db = db
        self.total = total
        self.flush_every = flush_every
        self.flush_s = flush_s
        self.progress_s = progress_s
        self.label = label
        self.counts: Counter[str] = Counter()
        self.done = 0
        self.written = 0
        self._ops: list[Any] = []
        self._started = self._flushed = self._logged = time.monotonic()

    def add(self, song: Song, attempts_before: int, outcome: Outcome) -> None:
        self._ops.append(queue.lyrics_update(song.track_id, outcome, attempts_before, datetime.now(UTC)))
        self.counts[outcome.status] += 1
        self.done += 1
        now = time.monotonic()
        if len(self._ops) >= self.flush_every or now - self._flushed >= self.flush_s:
            self.flush()
        if now - self._logged >= self.progress_s:
            self.log_progress()

    def flush(self) -> None:
        if self._ops:
            self.written += self.db[queue.SONGS].bulk_write(self._ops, ordered=False).modified_count
            self._ops = []
        self._flushed = time.monotonic()

    def log_progress(self) -> None:
        elapsed = max(1e-9, time.monotonic() - self._started)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        log.info("%s: %d/%d songs (%s), %.1f songs/s, ETA %.0f s", self.label, self.done, self.total,
                 ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "-", rate, eta)
        self._logged = time.monotonic()

    def summary(self) -> dict[str, Any]:
        self.flush()
        self.log_progress()
        return {"songs": self.done, "written": self.written, **{k: self.counts.get(k, 0) for k in
                ("found", "not_found", "instrumental", "error")},
                "seconds": round(time.monotonic() - self._started, 3)}


def run_dump_chunk(db: Database, chunk: queue.Chunk, dump_path: str, *, batch_size: int = 500,
                   allowed: str | Allowed | None = None, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
                   **writer_kwargs: Any) -> dict[str, Any]:
    provider = DumpProvider(dump_path, allowed=allowed, max_unpacked_bytes=max_unpacked_bytes)  # checked first
    todo = queue.chunk_songs(db, chunk)
    writer = ResultWriter(db, len(todo), label=f"lyrics chunk {chunk.index} (dump)", **writer_kwargs)
    with provider:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for (song, attempts), outcome in zip(batch, provider.lookup_many([s for s, _ in batch]), strict=True):
                writer.add(song, attempts, outcome)
    return writer.summary() | {"chunk": chunk.index, "provider": "dump"}


def run_api_chunk(db: Database, chunk: queue.Chunk, base_url: str, *, rate_per_s: float = 2.0,
                  concurrency: int = 4, timeout_s: float = 10.0, tries: int = 3, backoff_s: float = 1.0,
                  allowed: str | Allowed | None = None, **writer_kwargs: Any) -> dict[str, Any]:
    if allowed is not None:
        check_url(base_url.rstrip("/") + "/", allowed, what="base_url")
    todo = queue.chunk_songs(db, chunk)
    writer = ResultWriter(db, len(todo), label=f"lyrics chunk {chunk.index} (api)", **writer_kwargs)
    api_kwargs = {"rate_per_s": rate_per_s, "concurrency": concurrency, "timeout_s": timeout_s, "tries": tries,
                  "backoff_s": backoff_s}
    stats = asyncio.run(_api(todo, base_url, api_kwargs, writer.add))
    return writer.summary() | {"chunk": chunk.index, "provider": "api", **stats}


async def _api(todo: Iterable[tuple[Song, int]], base_url: str, api_kwargs: dict[str, Any],
               sink: Callable[[Song, int, Outcome], None]) -> dict[str, int]:
    async with LrclibApi(base_url, **api_kwargs) as api:
        window = max(1, api_kwargs.get("concurrency", 4)) * 2  # bounded: no task per song up front
        pending: set[asyncio.Task] = set()

        async def one(song: Song, attempts: int) -> tuple[Song, int, Outcome]:
            return song, attempts, await api.lookup(song)

        for song, attempts in todo:
            pending.add(asyncio.create_task(one(song, attempts)))
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sink(*task.result())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                sink(*task.result())
        return {"requests": api.stats.requests, "faults": api.stats.faults, "throttled": api.stats.throttled}
