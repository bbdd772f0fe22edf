"""A local LRCLIB-compatible HTTP API over an LRCLIB-dump-format SQLite file, with fault injection.

For tests and benchmarks (nothing here reaches the internet; it listens on 127.0.0.1)::

    with LrclibServer(sample.lrclib_dump, faults=FaultPlan(rate_429=0.1, seed=1)) as srv:
        httpx.get(f"{srv.url}/get", params={...})
        srv.requests  # [RequestRecord(t, path, params, status, fault), ...]

Endpoints (as https://lrclib.net/api): ``GET /api/get?track_name=&artist_name=&album_name=&duration=``,
``GET /api/get/{id}``, ``GET /api/search?q=`` or ``?track_name=&artist_name=&album_name=``. Inputs are
normalized with LRCLIB's own ``prepare_input`` (:func:`musicrec.sample.names.lrclib_lower`, which the
sample generator used to fill the ``*_lower`` columns).

Faults (:class:`FaultPlan`): each request draws one fault (or none) from a seeded RNG in arrival
order: ``429`` (with ``Retry-After``), ``500``, ``503`` (an HTML page, as from a proxy), ``slow`` (the
real answer after ``slow_s`` seconds) or ``truncated`` (status 200, ``application/json``, the first
half of the real body). ``max_rate_per_s`` makes the server itself answer 429 (``Retry-After: 1``,
fault ``rate_limited``) to requests beyond that many admitted ones in any sliding 1 s window.

Manual use: ``python -m tests.lrclib_server DUMP [--port P] [--rate-429 0.1 ...]`` (until Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_INCLUDE = Path(__file__).resolve().parents[1] / "include"
if str(_INCLUDE) not in sys.path:  # for `python -m tests.lrclib_server` (tests/conftest.py does it for pytest)
    sys.path.insert(0, str(_INCLUDE))

from musicrec.sample.names import lrclib_lower  # noqa: E402

__all__ = ["FaultPlan", "LrclibServer", "RequestRecord", "observed_max_rate", "SEARCH_LIMIT", "FAULTS"]

log = logging.getLogger(__name__)

SEARCH_LIMIT = 20
FAULTS = ("429", "500", "503", "slow", "truncated")  # in the order the RNG draw is cut into
RATE_LIMITED = "rate_limited"  # the fault name of the server's own max_rate_per_s answers
_DISCONNECT = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

_NOT_FOUND = {"code": 404, "name": "TrackNotFound", "message": "Failed to find specified track"}
_COLUMNS = """t.id, t.name, t.artist_name, t.album_name, t.duration, l.instrumental, l.plain_lyrics,
    l.synced_lyrics"""
_HTML_503 = (b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
             b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n")


@dataclass
class FaultPlan:
    """Fractions of requests (each 0..1, summing to at most 1) answered with a fault."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    rate_truncated: float = 0.0
    retry_after_s: float = 1  # the 429's Retry-After (sent as whole seconds, rounded up)
    slow_s: float = 5.0  # a slow request waits this long before its (real) answer
    seed: int = 0

    def __post_init__(self) -> None:
        rates = self.rates()
        for name, rate in zip(FAULTS, rates, strict=True):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultPlan: rate of {name!r} must be within 0..1, not {rate}")
        if sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"FaultPlan: the rates sum to {sum(rates):g} > 1")
        if self.retry_after_s < 0 or self.slow_s < 0:
            raise ValueError("FaultPlan: retry_after_s and slow_s must be >= 0")

    def rates(self) -> tuple[float, ...]:
        return (self.rate_429, self.rate_500, self.rate_503, self.rate_slow, self.rate_truncated)

    def draw(self, rnd: random.Random) -> str | None:
        """One fault name of :data:`FAULTS`, or None; always consumes exactly one draw."""
        x = rnd.random()
        edge = 0.0
        for name, rate in zip(FAULTS, self.rates(), strict=True):
            edge += rate
            if x < edge:
                return name
        return None


@dataclass(frozen=True)
class RequestRecord:
    t: float  # time.monotonic() at arrival
    path: str  # e.g. "/api/get"
    params: dict[str, str] = field(default_factory=dict)  # query parameters (first value of each)
    status: int = 0  # the status sent
    fault: str | None = None  # one of FAULTS, "rate_limited", or None


def observed_max_rate(records: Iterable[RequestRecord | float], window_s: float = 1.0) -> float:
    """The most requests within any window of ``window_s`` seconds (half-open: ``t_j - t_i < window_s``,
    so requests exactly ``1/rate`` apart reach ``rate``), divided by ``window_s``. Takes records or
    bare ``time.monotonic()`` values."""
    if window_s <= 0:
        raise ValueError("window_s must be > 0")
    times = sorted(r if isinstance(r, int | float) else r.t for r in records)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window_s


def _fts_words(words: Sequence[str]) -> str:
    """Each word as an FTS5 string (so punctuation or operator words cannot break the syntax)."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _searchable(text: str | None) -> list[str]:
    # a word without letters/digits is no token for FTS5's unicode61 tokenizer (an empty phrase)
    return [w for w in lrclib_lower(text or "").split() if any(ch.isalnum() for ch in w)]


def _blank(value: str | None) -> bool:
    return value is None or not lrclib_lower(value).strip()


def _record(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": int(row[0]),
        "name": row[1],
        "trackName": row[1],
        "artistName": row[2],
        "albumName": row[3],
        "duration": None if row[4] is None else float(row[4]),
        "instrumental": bool(row[5]),
        "plainLyrics": row[6],
        "syncedLyrics": row[7],
    }


def _error(code: int, name: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"code": code, "name": name, "message": message}


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    app: LrclibServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECT) or (isinstance(exc, OSError) and self.app._stopping.is_set()):
            return  # the client went away (or we are closing): nothing to answer, nothing to report
        log.warning("lrclib test server: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    server_version = "lrclib-test-server"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is dropped after this long
    disable_nagle_algorithm = True  # else headers + body in two segments wait for delayed ACKs (40 ms)
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self._con: sqlite3.Connection | None = None
        self.server.app._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except _DISCONNECT:
            pass
        finally:
            if self._con is not None:
                self._con.close()
            self.server.app._track(self.connection, False)

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECT:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the per-request stderr lines

    @property
    def con(self) -> sqlite3.Connection:
        """This connection's (= this thread's) read-only SQLite connection, opened on first use."""
        if self._con is None:
            self._con = self.server.app._connect()
        return self._con

    # ----------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        app = self.server.app
        t = time.monotonic()
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        params = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        fault, plan = app._admit(t)

        if fault == RATE_LIMITED:
            status, body = _error(429, "TooManyRequests", "Rate limit exceeded, slow down")
            self._reply(app, t, path, params, status, _dumps(body), fault, {"Retry-After": "1"})
            return
        if fault == "429":
            status, body = _error(429, "TooManyRequests", "Too many requests, slow down")
            retry = str(max(0, math.ceil(plan.retry_after_s)))
            self._reply(app, t, path, params, status, _dumps(body), fault, {"Retry-After": retry})
            return
        if fault == "500":
            status, body = _error(500, "UnknownError", "Something bad happened when processing your request")
            self._reply(app, t, path, params, status, _dumps(body), fault)
            return
        if fault == "503":
            self._reply(app, t, path, params, 503, _HTML_503, fault, ctype="text/html")
            return
        if fault == "slow" and app._stopping.wait(plan.slow_s):
            self.close_connection = True  # the server is stopping: drop the request
            return

        status, obj = self._answer(path, params)
        body = _dumps(obj)
        if fault == "truncated":
            status, body = 200, body[: max(1, len(body) // 2)]
        self._reply(app, t, path, params, status, body, fault)

    def _reply(self, app: LrclibServer, t: float, path: str, params: dict[str, str], status: int, body: bytes,
               fault: str | None, headers: dict[str, str] | None = None,
               ctype: str = "application/json") -> None:
        app._log(RequestRecord(t, path, params, status, fault))
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except _DISCONNECT:
            self.close_connection = True

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        try:
            if path == "/api/get":
                return self._get(params)
            if path.startswith("/api/get/"):
                raw = path[len("/api/get/"):]
                try:
                    track_id = int(raw)
                except ValueError:
                    return _error(400, "ValidationError", f"Invalid URL: cannot parse {raw!r} as an integer id")
                return self._by_id(track_id)
            if path == "/api/search":
                return self._search(params)
            return _error(404, "NotFound", f"No route for {path}")
        except sqlite3.Error:
            log.warning("lrclib test server: query failed for %s %s", path, params, exc_info=True)
            return _error(500, "UnknownError", "Something bad happened when processing your request")

    # ----------------------------------------------------------------------------- endpoints

    def _by_id(self, track_id: int) -> tuple[int, Any]:
        row = self.con.execute(f"SELECT {_COLUMNS} FROM tracks t LEFT JOIN lyrics l ON l.id = t.last_lyrics_id"
                               " WHERE t.id = ?", (track_id,)).fetchone()
        return (200, _record(row)) if row else (404, _NOT_FOUND)

    def _get(self, params: dict[str, str]) -> tuple[int, Any]:
        missing = [k for k in ("track_name", "artist_name", "album_name", "duration") if k not in params]
        if missing:
            return _error(400, "ValidationError", f"Failed to deserialize query string: missing field "
                                                  f"`{missing[0]}`")
        for key in ("track_name", "artist_name"):
            if not params[key]:
                return _error(400, "ValidationError", f"{key}: cannot be empty")
        try:
            duration = float(params["duration"])
        except ValueError:
            return _error(400, "ValidationError", "Failed to deserialize query string: duration: invalid float")
        if not math.isfinite(duration) or not 1.0 <= duration <= 3600.0:
            return _error(400, "ValidationError", "duration: must be between 1 and 3600")
        name, artist = lrclib_lower(params["track_name"]), lrclib_lower(params["artist_name"])
        if not name or not artist:
            return 404, _NOT_FOUND
        where = ["t.name_lower = ?", "t.artist_name_lower = ?", "t.duration >= ?", "t.duration <= ?"]
        args: list[Any] = [name, artist, duration - 2.0, duration + 2.0]
        album = lrclib_lower(params["album_name"])
        if album:  # as LRCLIB: a blank album is no condition
            where.append("t.album_name_lower = ?")
            args.append(album)
        row = self.con.execute(f"SELECT {_COLUMNS} FROM tracks t LEFT JOIN lyrics l ON l.id = t.last_lyrics_id"
                               f" WHERE {' AND '.join(where)} ORDER BY t.id LIMIT 1", args).fetchone()
        return (200, _record(row)) if row else (404, _NOT_FOUND)

    def _search(self, params: dict[str, str]) -> tuple[int, Any]:
        q, track = params.get("q"), params.get("track_name")
        if _blank(q) and _blank(track):
            return _error(400, "ValidationError", "At least one of q or track_name must be present")
        artist, album = params.get("artist_name"), params.get("album_name")
        if not _blank(q):
            words = _searchable(q)
            expr = _fts_words(words)
            ordered = len(words) > 3
        else:
            words = _searchable(track)
            parts = [f"name_lower : ({_fts_words(words)})"] if words else []
            for column, value in (("artist_name_lower", artist), ("album_name_lower", album)):
                if not _blank(value) and (col_words := _searchable(value)):
                    parts.append(f"{column} : ({_fts_words(col_words)})")
            expr = " AND ".join(parts)
            ordered = len(words) > 3 or not (_blank(artist) and _blank(album))
        if not words:
            return 200, []
        # LRCLIB ranks (bm25) only longer or multi-field queries; short ones come in rowid order.
        rows = self.con.execute(f"""
            SELECT {_COLUMNS} FROM (
              SELECT rowid AS rid, rank AS r FROM tracks_fts WHERE tracks_fts MATCH ?
              {"ORDER BY rank" if ordered else ""} LIMIT {SEARCH_LIMIT}
            ) s
            JOIN tracks t ON t.id = s.rid
            LEFT JOIN lyrics l ON l.id = t.last_lyrics_id
            ORDER BY {"s.r, t.id" if ordered else "t.id"}
        """, (expr,)).fetchall()
        return 200, [_record(r) for r in rows]


class LrclibServer:
    """An LRCLIB-compatible API on ``host:port`` (0 = a free port), serving ``dump_path`` read-only.

    Use as a context manager or with :meth:`start`/:meth:`stop`. :attr:`url` is the API's base
    (``http://127.0.0.1:PORT/api``); :attr:`requests` a snapshot of every answered request;
    :attr:`faults` may be replaced at any time (the RNG restarts from the new plan's seed).
    """

    def __init__(self, dump_path: str | Path, *, faults: FaultPlan | None = None, host: str = "127.0.0.1",
                 port: int = 0, max_rate_per_s: float | None = None) -> None:
        self.dump_path = Path(dump_path)
        self.host = host
        self.max_rate_per_s = max_rate_per_s
        self._port = port
        self._lock = threading.Lock()
        self._faults = faults or FaultPlan()
        self._rnd = random.Random(self._faults.seed)
        self._records: list[RequestRecord] = []
        self._arrivals: list[float] = []  # every request's arrival, answered or not (a stalled one too)
        self._admitted: deque[float] = deque()
        self._sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> LrclibServer:
        if self._httpd is not None:
            raise RuntimeError("LrclibServer is already running")
        if not self.dump_path.is_file():
            raise FileNotFoundError(f"LRCLIB dump not found: {self.dump_path}")
        con = self._connect()
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
        if missing := {"tracks", "lyrics", "tracks_fts"} - tables:
            raise ValueError(f"{self.dump_path} is not an LRCLIB dump: tables {sorted(missing)} are missing")
        self._stopping.clear()
        httpd = _HttpServer((self.host, self._port), _Handler)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"lrclib-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes slow requests
        httpd.shutdown()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # idle keep-alive connections would hold their threads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LrclibServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LrclibServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:54321/api``."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def faults(self) -> FaultPlan:
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        with self._lock:
            self._faults = plan or FaultPlan()
            self._rnd = random.Random(self._faults.seed)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the log, in the order the answers were sent."""
        with self._lock:
            return list(self._records)

    @property
    def arrivals(self) -> list[float]:
        """``time.monotonic()`` at the arrival of every request, including those still stalled or
        dropped at stop (:attr:`requests` has only the answered ones)."""
        with self._lock:
            return list(self._arrivals)

    def reset_log(self) -> None:
        with self._lock:
            self._records.clear()
            self._arrivals.clear()

    # ----------------------------------------------------------------------------- for the handler

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.dump_path.resolve().as_uri()}?mode=ro", uri=True)

    def _admit(self, t: float) -> tuple[str | None, FaultPlan]:
        """This request's fault (one RNG draw per request, in arrival order) and the plan it came from."""
        with self._lock:
            self._arrivals.append(t)
            plan = self._faults
            fault = plan.draw(self._rnd)
            if self.max_rate_per_s is not None:
                while self._admitted and t - self._admitted[0] >= 1.0:
                    self._admitted.popleft()
                if len(self._admitted) + 1 > self.max_rate_per_s:
                    return RATE_LIMITED, plan
                self._admitted.append(t)
            return fault, plan

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lrclib_server", description=__doc__.split("\n")[0])
    parser.add_argument("dump", type=Path, help="an LRCLIB-dump-format .sqlite3 file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (default)")
    for name in FAULTS:
        parser.add_argument(f"--rate-{name}", type=float, default=0.0, metavar="F",
                            help=f"fraction of requests answered with fault {name!r}")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of the 429 fault (s)")
    parser.add_argument("--slow-s", type=float, default=5.0, help="delay of the slow fault (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rate", type=float, default=None, help="answer 429 beyond this many requests/s")
    args = parser.parse_args(argv)
    plan = FaultPlan(rate_429=args.rate_429, rate_500=args.rate_500, rate_503=args.rate_503,
                     rate_slow=args.rate_slow, rate_truncated=args.rate_truncated,
                     retry_after_s=args.retry_after, slow_s=args.slow_s, seed=args.seed)
    # SIGINT/SIGTERM set an event that the main thread waits on in short steps. (It used to sleep
    # 3600 s and rely on a KeyboardInterrupt: that exception can be raised anywhere, e.g. inside
    # start() or print() before the try block, and a signal the kernel hands to a server thread
    # only sets CPython's flag; the main thread runs the handler when it next wakes, which from an
    # hour-long sleep is never.) The handlers are installed before the port is bound, so a client
    # that got an answer can never signal a process that would still die of the default action.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LrclibServer(args.dump, faults=plan, host=args.host, port=args.port,
                          max_rate_per_s=args.max_rate) as server:
            print(f"LRCLIB test server on {server.url} (dump {args.dump}); Ctrl-C stops it", flush=True)
            while not stop.wait(0.2):
                pass
            n = len(server.requests)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped after {n} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
