"""The API provider: LRCLIB's HTTP API with httpx + asyncio, a global rate limit, bounded concurrency.

* ``GET /get`` when album and duration are known (LRCLIB matches duration within ±2 s); a 404 there
  falls back to ``GET /search?track_name=&artist_name=`` (≤ 20 results), scored like the dump.
* Faults are never a "not found": a timeout, connection error, 429, 5xx or malformed JSON is retried
  (tenacity; a 429's ``Retry-After`` pauses the *whole* client, not just that request), and when
  the tries are spent the song's outcome is ``error`` (the queue retries it in a later run).
* One :class:`RateLimiter` spaces every request of the client (``rate_per_s``; 0 = off); a semaphore
  bounds the requests in flight (``concurrency``). The User-Agent names the project, as LRCLIB asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from musicrec import __version__
from musicrec.lyrics.match import THRESHOLD, Candidate, Outcome, Song, outcome_of
from musicrec.lyrics.normalize import query_words, strip_credits

log = logging.getLogger(__name__)

PROVIDER = "api"
DEFAULT_BASE_URL = "https://lrclib.net/api"
USER_AGENT = f"musicrec {__version__} (https://github.com/musicrec/musicrec)"


class TransientError(Exception):
    """A fault worth retrying (never a verdict about the song)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Spaces acquisitions ``1/rate_per_s`` apart across every task of the client; :meth:`pause`
    holds everyone back (a 429's Retry-After)."""

    def __init__(self, rate_per_s: float) -> None:
        # 3 % margin: requests reach the server with a few ms of jitter, and a server counting
        # arrivals in a sliding window must never see rate_per_s + 1
        self.interval = 1.03 / rate_per_s if rate_per_s and rate_per_s > 0 else 0.0
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                start = max(now, self._next, self._paused_until)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            self._next = time.monotonic() + self.interval


def _retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return default


@dataclass
class ApiStats:
    requests: int = 0
    faults: int = 0
    throttled: int = 0


class LrclibApi:
    """Use as ``async with LrclibApi(base_url, ...) as api: outcome = await api.lookup(song)``."""

    name = PROVIDER

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, rate_per_s: float = 2.0, concurrency: int = 4,
                 timeout_s: float = 10.0, tries: int = 3, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 threshold: float = THRESHOLD, user_agent: str = USER_AGENT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = RateLimiter(rate_per_s)
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.timeout_s = timeout_s
        self.tries = max(1, tries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.threshold = threshold
        self.stats = ApiStats()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), transport=transport,
                                         headers={"User-Agent": user_agent, "Accept": "application/json"},
                                         limits=httpx.Limits(max_connections=max(1, concurrency)))

    async def __aenter__(self) -> LrclibApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def _request(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        """One HTTP request: (status, JSON) for 200/404; TransientError for every fault."""
        await self.limiter.acquire()
        async with self.semaphore:
            self.stats.requests += 1
            try:
                resp = await self._client.get(self.base_url + path, params=params)
            except httpx.TimeoutException as exc:
                raise TransientError(f"timeout after {self.timeout_s:g} s ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 429:
            wait = _retry_after(resp.headers.get("Retry-After"), self.backoff_s)
            self.stats.throttled += 1
            self.limiter.pause(wait)
            raise TransientError(f"HTTP 429 (Retry-After {wait:g} s)", retry_after_s=wait)
        if resp.status_code >= 500:
            raise TransientError(f"HTTP {resp.status_code}")
        if resp.status_code not in (200, 404):
            # 400 etc.: our request is wrong; retrying will not help, but it is no verdict either
            raise TransientError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            body = resp.json()
        except ValueError:
            raise TransientError(f"malformed JSON from {path} (HTTP {resp.status_code}, "
                                 f"{len(resp.content)} bytes)") from None
        return resp.status_code, body

    async def _get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        """:meth:`_request` with retries: exponential backoff, a 429 waits its Retry-After."""
        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, TransientError) and exc.retry_after_s is not None:
                return 0.0  # the limiter already holds every request back until Retry-After
            return min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1))

        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.tries), wait=wait, reraise=True,
                                           retry=retry_if_exception_type(TransientError)):
            with attempt:
                try:
                    return await self._request(path, params)
                except TransientError:
                    self.stats.faults += 1
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def lookup(self, song: Song) -> Outcome:
        try:
            if song.exact:
                status, body = await self._get("/get", {
                    "track_name": song.title, "artist_name": song.artist, "album_name": song.album,
                    "duration": round(song.duration_s or 0)})
                if status == 200 and isinstance(body, dict):
                    result = outcome_of(song, [Candidate.from_api(body)], PROVIDER, self.threshold)
                    if result.status != "not_found":
                        return result
            status, body = await self._get("/search", {
                "track_name": " ".join(query_words(strip_credits(song.title))) or song.title,
                "artist_name": " ".join(query_words(strip_credits(song.artist))) or song.artist})
            if status == 404:
                body = []
            if not isinstance(body, list):
                raise TransientError(f"/search returned {type(body).__name__}, not a list")
            candidates = [Candidate.from_api(r) for r in body if isinstance(r, dict) and "id" in r]
            result = outcome_of(song, candidates, PROVIDER, self.threshold)
        except TransientError as exc:
            result = Outcome("error", PROVIDER, error=str(exc))
        return result
