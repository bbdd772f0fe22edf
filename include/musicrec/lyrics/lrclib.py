"""The LRCLIB client (the API provider): LRCLIB's HTTP API with httpx + asyncio, a global rate limit, bounded concurrency.

* ``GET /get`` when album and duration are known (LRCLIB matches duration within ±2 s); a 404 there
  falls back to ``GET /search?track_name=&artist_name=`` (≤ 20 results), scored like the dump.
* Faults are never a "not found": a timeout, connection error, 429, 5xx or malformed JSON is retried
  (tenacity; a 429's ``Retry-After`` pauses the *whole* client, not just that request), and when
  the tries are spent the song's outcome is ``error`` (the queue retries it in a later run).
* One :class:`RateLimiter` holds the whole client to ``rate_per_s`` requests in any 1-second window
  (0 = off), counting retries; a request takes its concurrency slot (``concurrency``) first and its
  send permit right before it goes out, and a 429's Retry-After stops every sender until it ends.
* Response bodies are read in chunks up to ``max_body_bytes``; a longer one is an ``error`` outcome.
  The User-Agent names the project, as LRCLIB asks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
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
MAX_BODY_BYTES = 8 * 1024 * 1024  # /search's 20 results with synced lyrics are well under 1 MiB
USER_AGENT = f"musicrec {__version__} (https://github.com/musicrec/musicrec)"


class TransientError(Exception):
    """A fault worth retrying (never a verdict about the song)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ResponseTooLarge(Exception):
    """A response body over ``max_body_bytes``: not retried (it would only come back as big)."""


class RateLimiter:
    """At most ``rate_per_s`` sends in any window of 1 s, across every task of the client.

    Two rules, both checked at the moment a request is about to go out (the caller already holds
    its concurrency slot, so a granted send is never parked behind a slow request and spent later
    in a burst):

    * pacing: consecutive sends are at least ``1/rate_per_s`` apart (no bursts after a stall);
    * a sliding window: at most ``floor(rate_per_s)`` sends (at least 1) within ``1 s + slack``, so
      the few ms between the grant and the request reaching the server (more on a loaded machine)
      cannot squeeze ``rate_per_s + 1`` arrivals into one server-side second.

    :meth:`pause` (a 429's Retry-After) holds every sender back until it ends; a waiter re-checks
    all rules after each sleep, so a pause set while it sleeps still applies.
    """

    SLACK_S = 0.1

    def __init__(self, rate_per_s: float) -> None:
        self.enabled = bool(rate_per_s and rate_per_s > 0)
        self.interval = 1.0 / rate_per_s if self.enabled else 0.0
        self.window_s = 1.0 + self.SLACK_S
        self.max_in_window = max(1, int(rate_per_s)) if self.enabled else 0
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _earliest(self, now: float) -> float:
        start = max(now, self._paused_until)
        if not self.enabled:
            return start
        sent = self._sent
        while sent and now - sent[0] >= self.window_s:
            sent.popleft()
        if sent:
            start = max(start, sent[-1] + self.interval)
            if len(sent) >= self.max_in_window:
                start = max(start, sent[-self.max_in_window] + self.window_s)
        return start

    async def acquire(self) -> None:
        """Wait until a send is allowed and record it; call right before sending."""
        async with self._lock:
            while True:
                now = time.monotonic()
                start = self._earliest(now)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            if self.enabled:
                self._sent.append(time.monotonic())


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
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = RateLimiter(rate_per_s)
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.timeout_s = timeout_s
        self.tries = max(1, tries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.threshold = threshold
        self.max_body_bytes = max_body_bytes
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
        # The slot first, then the token right before sending: a token taken while waiting for a
        # slot would be spent late, together with others, in a burst when slow requests end.
        async with self.semaphore:
            await self.limiter.acquire()
            self.stats.requests += 1
            try:
                async with self._client.stream("GET", self.base_url + path, params=params) as resp:
                    content = await self._read_bounded(resp, path)
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
            raise TransientError(f"HTTP {resp.status_code}: {content[:200].decode('utf-8', 'replace')}")
        try:
            body = json.loads(content)
        except ValueError:
            raise TransientError(f"malformed JSON from {path} (HTTP {resp.status_code}, "
                                 f"{len(content)} bytes)") from None
        return resp.status_code, body

    async def _read_bounded(self, resp: httpx.Response, path: str) -> bytes:
        """The body, read in chunks and abandoned past ``max_body_bytes`` (a hostile or broken
        server must not fill the worker's memory)."""
        limit = self.max_body_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"{path} answered {int(declared)} bytes (Content-Length), over the "
                                   f"{limit}-byte limit on LRCLIB responses")
        parts, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"{path} answered more than {limit} bytes, over the limit on LRCLIB "
                                       f"responses; the rest was not read")
            parts.append(chunk)
        return b"".join(parts)

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
        except (TransientError, ResponseTooLarge) as exc:
            result = Outcome("error", PROVIDER, error=str(exc))
        return result
