"""The serving API (design §8): FastAPI app factory. No Airflow imports.

``create_app(settings)`` builds the app; ``python -m musicrec.serve`` runs it with uvicorn. Routes,
answers and errors are the interface of design §8; the decisions it leaves open are in
docs/operations.md ("Serving API").
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicrec.serve import events, keys
from musicrec.serve.deps import Services, Settings
from musicrec.serve.recs import SEARCH_MODES, ApiError, Recommender

log = logging.getLogger(__name__)

MAX_K = 100
STATIC = resources.files("musicrec.serve") / "static"
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
              503: "unavailable"}
# latency buckets for a sub-100 ms API (seconds)
BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# ----------------------------------------------------------------------------- answer models (OpenAPI)

class Item(BaseModel):
    track_id: str
    title: str | None
    artist: str | None
    score: float


class ListAnswer(BaseModel):
    model_version: str | None
    items: list[Item]
    fallback: Literal["popularity"] | None


class Track(BaseModel):
    track_id: str
    title: str | None
    artist: str | None
    lyrics_status: str | None
    plays: int


class Rejected(BaseModel):
    index: int
    reason: str


class EventsAnswer(BaseModel):
    accepted: int
    rejected: list[Rejected]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorBody


EVENTS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["events"],
        "properties": {"events": {"type": "array", "items": {
            "type": "object",
            "properties": {"user_id": {"type": "string"}, "track_id": {"type": "string"},
                           "artist": {"type": "string"}, "title": {"type": "string"},
                           "ts": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
                                  "description": "ISO-8601 (UTC when no offset) or epoch milliseconds"},
                           "action": {"type": "string", "enum": ["listen", "skip", "complete"]}},
            "required": ["user_id", "ts"]}}}}}}}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          extra: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}} | (extra or {}), status_code=status,
                        headers=headers)


# ----------------------------------------------------------------------------- metrics

class Metrics:
    """Request counts and latency per route template (not per raw path: bounded label values)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("musicrec_serve_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("musicrec_serve_request_seconds", "HTTP request latency (seconds)",
                                 ["method", "route"], buckets=BUCKETS, registry=self.registry)


class MetricsMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware overhead): times each request and labels it with the route
    template FastAPI matched (``scope["route"]``), ``unmatched`` otherwise."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/")
                                                      else "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, label, str(status["code"])).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)


# ----------------------------------------------------------------------------- the app

# module level: with postponed annotations FastAPI resolves these names in the module's globals
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items (1..{MAX_K})")]
SearchMode = Literal["hybrid", "dense", "sparse", "bm25"]
Creds = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(
    auto_error=False, description="An API key: `python -m musicrec.serve keys create`"))]
assert SearchMode.__args__ == SEARCH_MODES  # one list of modes


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or (services.settings if services else Settings.from_env())
    services = services or Services(settings)
    recommender = Recommender(services)
    key_cache = keys.KeyCache(settings.key_cache_s)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    # docs_url/redoc_url off: FastAPI's pages load Swagger UI / ReDoc from a CDN; /docs is our own
    # self-contained page (api_docs), which fetches nothing
    app = FastAPI(lifespan=lifespan, title="musicrec serving API", version="1", docs_url=None, redoc_url=None,
                  description="Recommendations, lyrics search and listen events (design §8). Every /v1 route "
                              "needs `Authorization: Bearer <key>`.",
                  responses={401: {"model": ErrorAnswer}, 403: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer}})
    app.state.services, app.state.recommender, app.state.keys, app.state.metrics = (services, recommender,
                                                                                     key_cache, metrics)

    # ---------------------------------------------------------------- errors: always {"error": {...}}

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail),
                     getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable: %s: %s", type(exc).__name__, exc)
        return error(503, "unavailable", "a backing store is unavailable; try again")

    # registered by class (not under Exception), so they are answered inside the app and the metrics
    # middleware sees the 503 it sent
    for exc_class in _store_errors():
        app.add_exception_handler(exc_class, _unavailable)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(500, "internal", "internal error")

    # ---------------------------------------------------------------- auth

    def require(scope: str):
        # async: a remembered key is checked on the event loop (no thread hop); only a lookup goes to
        # the thread pool
        async def check(creds: Creds) -> dict[str, Any]:
            if creds is None or not creds.credentials:
                raise ApiError(401, "unauthorized", "missing `Authorization: Bearer <key>`")
            hit, doc = key_cache.cached(creds.credentials)
            if not hit:
                doc = await run_in_threadpool(key_cache.get, services.db, creds.credentials)
            if doc is None:
                raise ApiError(401, "unauthorized", "unknown or revoked key")
            if scope not in doc.get("scopes", ()):
                raise ApiError(403, "forbidden", f"this key lacks the {scope!r} scope")
            return doc
        return check

    read = [Depends(require("read"))]

    # ---------------------------------------------------------------- read routes

    @app.get("/v1/users/{user_id}/recommendations", response_model=ListAnswer, dependencies=read,
             tags=["recommendations"], responses={404: {"model": ErrorAnswer}})
    def recommendations(user_id: str, k: K = 10) -> dict[str, Any]:
        """The user's home feed (ALS); a cold user gets the popularity list."""
        return recommender.home(user_id, k).as_dict()

    @app.get("/v1/users/{user_id}/next", response_model=ListAnswer, dependencies=read, tags=["recommendations"],
             responses={404: {"model": ErrorAnswer}})
    def next_songs(user_id: str, track_id: Annotated[str, Query(min_length=1, max_length=256)],
                   k: K = 10) -> dict[str, Any]:
        """Next songs after ``track_id``: session 0.7·user + 0.3·track; 0.6 ALS + 0.4 lyrics similarity."""
        return recommender.next(user_id, track_id, k).as_dict()

    @app.get("/v1/users", dependencies=read, tags=["recommendations"])
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        """Some user ids (for the web page's picker) and whether the served model holds each."""
        return recommender.users(limit)

    @app.get("/v1/tracks/{track_id}", response_model=Track, dependencies=read, tags=["tracks"],
             responses={404: {"model": ErrorAnswer}})
    def track(track_id: str) -> dict[str, Any]:
        return recommender.track(track_id)

    @app.get("/v1/tracks/{track_id}/similar", response_model=ListAnswer, dependencies=read, tags=["tracks"],
             responses={404: {"model": ErrorAnswer}})
    def similar(track_id: str, k: K = 10) -> dict[str, Any]:
        """Nearest items to the track in the served ALS model."""
        return recommender.similar(track_id, k).as_dict()

    @app.get("/v1/search", response_model=ListAnswer, dependencies=read, tags=["search"],
             responses={503: {"model": ErrorAnswer}})
    def search(q: Annotated[str, Query(min_length=1, max_length=1000)], k: K = 10,
               mode: SearchMode = "hybrid") -> dict[str, Any]:
        """Lyrics search: ``hybrid`` (dense + sparse + BM25, reciprocal-rank fused), or one leg alone."""
        return recommender.search(q, k, mode).as_dict()

    # ---------------------------------------------------------------- events

    @app.post("/v1/events", status_code=202, response_model=EventsAnswer, tags=["events"],
              dependencies=[Depends(require("events"))], openapi_extra={"requestBody": EVENTS_BODY})
    async def post_events(request: Request) -> dict[str, Any]:
        """Listen events → Mongo ``listen_events`` (a replayed event is a no-op)."""
        # parsed here, after the key check, so a caller without a key learns nothing about the body
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"body is not JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise ApiError(422, "invalid_request", 'body must be {"events": [...]}')
        if len(body["events"]) > settings.max_events:
            raise ApiError(422, "invalid_request", f"at most {settings.max_events} events per request")
        docs, rejected = [], []
        for i, obj in enumerate(body["events"]):
            checked = events.check(obj)
            if checked.doc is None:
                rejected.append({"index": i, "reason": checked.reason})
            else:
                docs.append(checked.doc)
        if docs:
            await run_in_threadpool(_store_events, services, docs)
        return {"accepted": len(docs), "rejected": rejected}

    # ---------------------------------------------------------------- operations

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no store is touched)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": ErrorAnswer}})
    def readyz() -> Response:
        """Readiness: Mongo answers, Milvus answers and an ALS model is served."""
        checks: dict[str, Any] = {}
        try:
            services.db.command("ping")
            checks["mongo"] = "ok"
        except Exception as exc:
            checks["mongo"] = f"error: {type(exc).__name__}"
        try:
            served = recommender.served()
            checks["milvus"] = "ok"
            checks["model"] = served[0] if served else None
        except Exception as exc:
            checks["milvus"], checks["model"] = f"error: {type(exc).__name__}", None
        if checks["mongo"] == "ok" and checks["milvus"] == "ok" and checks["model"]:
            return JSONResponse({"status": "ready", "checks": checks})
        failed = [name for name in ("mongo", "milvus") if checks[name] != "ok"]
        msg = f"not ready: {', '.join(failed)} unavailable" if failed else "not ready: no ALS model is served"
        return error(503, "not_ready", msg, extra={"checks": checks})

    @app.get("/metrics", tags=["operations"])
    def prometheus() -> Response:
        """Prometheus text: requests and latency per route."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---------------------------------------------------------------- the web page

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(api_docs(app.openapi()))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # middlewares: the last added is the outermost (metrics time everything, CORS included)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def api_docs(spec: dict[str, Any]) -> str:
    """The OpenAPI page: every route with its parameters and answers, rendered from the spec into one
    self-contained HTML page (no script, no stylesheet from anywhere; the full spec is /openapi.json)."""
    esc = html.escape
    schemas = spec.get("components", {}).get("schemas", {})

    def schema_name(s: dict[str, Any]) -> str:
        if "$ref" in s:
            return s["$ref"].rsplit("/", 1)[-1]
        if s.get("type") == "array":
            return f"array of {schema_name(s.get('items', {}))}"
        if "anyOf" in s or "oneOf" in s:
            return " | ".join(schema_name(x) for x in s.get("anyOf") or s.get("oneOf"))
        return s.get("type", "object")

    out = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(spec['info']['title'])}"
           "</title><style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:0 auto;padding:0 1rem;"
           "color:#222}code{background:#f4f4f4;padding:0 .2rem}table{border-collapse:collapse;margin:.3rem 0 1rem}"
           "td,th{text-align:left;padding:.15rem .5rem;border-bottom:1px solid #eee;vertical-align:top}"
           ".m{font-weight:bold;color:#0a5}.muted{color:#777}</style></head><body>",
           f"<h1>{esc(spec['info']['title'])} <span class=\"muted\">v{esc(str(spec['info'].get('version', '')))}"
           "</span></h1>", f"<p>{esc(spec['info'].get('description', ''))}</p>",
           "<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI "
           f"{esc(spec.get('openapi', ''))}). Web page: <a href=\"/\">/</a>.</p>"]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            anchor = esc(f"{method}-{path}", quote=True)
            out.append(f"<h2 id=\"{anchor}\"><span class=\"m\">{esc(method.upper())}</span> <code>{esc(path)}</code>"
                       f"</h2><p>{esc(op.get('summary', ''))}</p>")
            if op.get("description"):
                out.append(f"<p class=\"muted\">{esc(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th>"
                           "<th>description</th></tr>")
                for prm in params:
                    sch = prm.get("schema", {})
                    bounds = ", ".join(f"{k} {sch[k]}" for k in ("minimum", "maximum", "default", "enum")
                                       if k in sch)
                    out.append(f"<tr><td><code>{esc(prm['name'])}</code></td><td>{esc(prm['in'])}</td>"
                               f"<td>{esc(schema_name(sch))}{esc(' (' + bounds + ')') if bounds else ''}</td>"
                               f"<td>{'yes' if prm.get('required') else 'no'}</td>"
                               f"<td>{esc(prm.get('description', sch.get('description', '')))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append(f"<p>Body: <code>{esc(json.dumps(body, separators=(',', ':')))}</code></p>")
            out.append("<table><tr><th>status</th><th>answer</th></tr>")
            for status, resp in op.get("responses", {}).items():
                sch = resp.get("content", {}).get("application/json", {}).get("schema", {})
                name = schema_name(sch) if sch else ""
                fields = ", ".join(schemas.get(name, {}).get("properties", {}))
                out.append(f"<tr><td>{esc(status)}</td><td>{esc(resp.get('description', ''))}"
                           f"{' — <code>' + esc(name) + '</code>' if name else ''}"
                           f"{' <span class=muted>{' + esc(fields) + '}</span>' if fields else ''}</td></tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "".join(out)


_indexed: set[int] = set()
_indexed_lock = threading.Lock()


def _store_events(services: Services, docs: list[dict[str, Any]]) -> None:
    with _indexed_lock:  # the indexes once per process and client, not per request
        if id(services) not in _indexed:
            events.ensure_indexes(services.db)
            _indexed.add(id(services))
    events.store(services.db, docs)


def _store_errors() -> list[type[Exception]]:
    """Exceptions that mean a store is down or unreachable (→ 503, not 500)."""
    from pymilvus.exceptions import MilvusException
    from pymongo.errors import ConnectionFailure

    return [ConnectionFailure, MilvusException, ConnectionError, TimeoutError]
