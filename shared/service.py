"""What every HTTP service of every pattern has, whatever its pattern.

`create_service` returns a FastAPI app with request ids, JSON logs, Prometheus metrics, a body
size limit, GET /health, GET /ready and GET /metrics. A pattern adds its own routes and
readiness checks; the mechanics of the pattern stay in the pattern's folder.
"""

import asyncio
import inspect
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from enum import Enum
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import configure_logging, request_id_var
from shared.schemas import UnscorableRows
from shared.settings import ServiceSettings

logger = logging.getLogger(__name__)
# One line per request costs more than a small model's prediction, so successful requests are
# logged at DEBUG; failures always, with the request id to trace them: a 5xx at ERROR (something
# broke), except 503, at WARNING: a service that sheds load or is not ready yet answers it on
# purpose, and an overload must not flood the error log.
access_log = logging.getLogger("shared.access")


def access_level(status: int) -> int:
    if status >= 500:
        return logging.WARNING if status == 503 else logging.ERROR
    return logging.INFO if status >= 400 else logging.DEBUG


disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the scrape size

REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
)

# What a request with a body can get before its handler runs, for the OpenAPI `responses` of
# every POST: the middleware's bounds on bodies.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Body is not UTF-8 (the message gives the byte)"},
    408: {"description": "Body not received whole within BODY_TIMEOUT_SECONDS"},
    413: {"description": "Body larger than the service's limit (MAX_BODY_BYTES)"},
    415: {"description": "Content-Type is not application/json (UTF-8)"},
}
# While a request with a body is handled: a check, without waiting, of whether its client has
# gone away (uvicorn runs a handler on after its client has left). The micro-batcher drops the
# rows of a request whose client has gone before they reach the model.
client_gone_var: ContextVar[Callable[[], Awaitable[bool]] | None] = ContextVar(
    "client_gone", default=None
)


def error_key(path: str) -> str:
    """The key of an error answer's message: the protocol's "error" under /v2/, else FastAPI's
    "detail"."""
    return "error" if path.startswith(OPEN_INFERENCE_PREFIX) else "detail"


class ClientGone(Exception):
    """Raised in a handler whose client has gone away (client_gone_var said so): no answer."""


# Where the Open Inference Protocol's routes are (shared/open_inference.py).
OPEN_INFERENCE_PREFIX = "/v2/"
# A caller's id is kept only if it is a sane token; anything else would poison logs and headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

T = TypeVar("T")

# A readiness or liveness check: None when fine, else the reason.
Check = Callable[[], Awaitable[str | None] | str | None]


class ServiceMiddleware:
    """Request id in and out, bounds on request bodies, and one metric sample per request.

    A request with a body must declare it JSON (415), send it within `body_timeout_seconds`
    (408) and keep it under `max_body_bytes` (413), encoded as UTF-8 (400): the middleware
    reads it whole before the app sees it, so no handler waits on a slow or stalled client and
    a client that goes away mid-body is logged as such (499), not as a server error.

    A plain ASGI middleware, kept lean on purpose: it runs on every request, and Starlette's
    BaseHTTPMiddleware alone would cost a task per request.
    """

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        max_body_bytes: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.too_large = f"request body larger than {max_body_bytes} bytes"
        self.too_slow = f"request body not received within {body_timeout_seconds:g} s"
        # prometheus-client's labels() lookup costs microseconds; the children are few.
        self._samples: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = length = content_type = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = os.urandom(16).hex()
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        # The Open Inference Protocol's bodies may be JSON then raw tensor bytes, sent with no
        # Content-Type (Triton's clients): its routes read them; its errors are {"error": ...}.
        protocol = scope["path"].startswith(OPEN_INFERENCE_PREFIX)
        key = error_key(scope["path"])
        status, response_started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await _answer(413, self.too_large, send_with_id, key, close=True)
            elif chunked or (length is not None and length != b"0"):
                problem = None if protocol else _not_json(content_type)
                if problem:
                    await _answer(415, problem, send_with_id, key, close=True)
                else:
                    body = await self._read_body(receive, send_with_id, key, utf8=not protocol)
                    if body is not None:
                        gone_token = client_gone_var.set(partial(_has_left, receive))
                        try:
                            await self.app(scope, _replay(body, receive), send_with_id)
                        finally:
                            client_gone_var.reset(gone_token)
                    elif not response_started:
                        status = 499  # nginx's "client closed request": nobody to answer
            else:
                await self.app(scope, receive, send_with_id)
        except ClientGone:
            status = 499  # its work was dropped: nobody to answer
        except Exception:
            if response_started:
                raise
            # Caught here, where the request id is known: the 500 and its log line carry it.
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            await _answer(500, "internal server error", send_with_id, key)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self._observe(scope["method"], route, status, seconds)
            level = access_level(status)
            if access_log.isEnabledFor(level):
                access_log.log(
                    level, "%s %s %d %.1fms", scope["method"], scope["path"], status, seconds * 1000
                )
            request_id_var.reset(token)

    async def _read_body(self, receive: Receive, send: Send, key: str, utf8: bool) -> bytes | None:
        """The whole body, or None once the client got its 4xx (or went away)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        logger.info("client went away before sending the whole body")
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await _answer(413, self.too_large, send, key, close=True)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _answer(408, self.too_slow, send, key, close=True)
            return None
        body = b"".join(chunks)
        if not utf8:
            return body
        try:
            body.decode()
        except UnicodeDecodeError as exc:
            # JSON is UTF-8 (RFC 8259); said here once, with the position, for every service.
            await _answer(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}", send, key)
            return None
        return body

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        sample = self._samples.get(key)
        if sample is None:
            sample = self._samples[key] = (
                REQUESTS.labels(self.service, method, route, str(status)),
                LATENCY.labels(self.service, route),
            )
        sample[0].inc()
        sample[1].observe(seconds)


def _not_json(content_type: bytes | None) -> str | None:
    """Why a body of this content type is refused (every body a service here takes is JSON)."""
    if content_type is None:
        return "Content-Type must be application/json; the request has none"
    media_type, _, parameters = content_type.decode("latin-1").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return f"Content-Type must be application/json, not {media_type or 'empty'}"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip(' "').lower() not in ("utf-8", "utf8"):
            return f"JSON bodies are UTF-8, not charset {value.strip()}"
    return None


async def _has_left(receive: Receive) -> bool:
    """Whether the client of a request whose body is read has gone away, without waiting: what
    Starlette's Request.is_disconnected does (the receive is cancelled unless a message is
    there already; uvicorn has one, http.disconnect, once the connection is lost)."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        return bool((await receive())["type"] == "http.disconnect")
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then the client's own messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(status: int, detail: str, send: Send, key: str, close: bool = False) -> None:
    body = json.dumps({key: detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:  # the rest of the body is never read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unscorable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnscorableRows)
    errors = [
        {
            "type": "value_error",
            "loc": ["body", "data", row],
            "msg": "values out of the model's numeric range",
        }
        for row in exc.rows
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's shape, minus the echoed "input" and "ctx" values, which can be huge or not JSON.
    errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    if isinstance(exc.__cause__, json.JSONDecodeError):
        # FastAPI says only "JSON decode error"; say what and where, as pydantic's parser does.
        cause = exc.__cause__
        errors = [
            {
                "type": "json_invalid",
                "loc": ["body"],
                "msg": f"Invalid JSON: {cause.msg} at line {cause.lineno} column {cause.colno}",
            }
        ]
    return JSONResponse({"detail": errors}, status_code=422)


async def failing_checks(checks: Mapping[str, Check]) -> dict[str, str]:
    """name -> reason of each check that reports one (/health's and /ready's answer)."""
    reasons = {}
    for check_name, check in checks.items():
        reason = check()
        if not isinstance(reason, str | None):
            reason = await reason
        if reason:
            reasons[check_name] = reason
    return reasons


def create_service(
    name: str,
    settings: ServiceSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    description: str = "",
    readiness: Mapping[str, Check] | None = None,
    liveness: Mapping[str, Check] | None = None,
) -> FastAPI:
    """A FastAPI app with the parts of the API contract that do not depend on the pattern.

    readiness: name -> check returning None when fine, or the reason the service is not ready
    (/ready is 503 while one reports: take it out of rotation). liveness: the same, for states
    only a restart fixes, such as a client that can no longer send (/health is 503 while one
    reports: restart it). A check may be async. Logging is configured here, for the process.
    """
    configure_logging(name, settings.log_level)
    app = FastAPI(title=name, description=description, lifespan=lifespan)
    app.state.settings = settings
    app.state.readiness = dict(readiness or {})
    app.state.liveness = dict(liveness or {})
    app.add_middleware(
        ServiceMiddleware,
        service=name,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UnscorableRows, _unscorable)

    @app.get(
        "/health",
        tags=["operations"],
        summary="Liveness: 200 while the process can serve; 503 when only a restart would help",
        responses={503: {"description": "Unhealthy, with the reasons"}},
    )
    async def health() -> Response:
        reasons = await failing_checks(app.state.liveness)
        if reasons:
            return JSONResponse({"status": "unhealthy", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/ready",
        tags=["operations"],
        summary="Readiness: 200 once the model is loaded and dependencies answer, else 503",
        responses={503: {"description": "Not ready, with the reasons"}},
    )
    async def ready() -> Response:
        reasons = await failing_checks(app.state.readiness)
        if reasons:
            return JSONResponse(
                {"status": "not ready", "reasons": reasons},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _HotRoute(Route):
    """A Starlette route that names itself in the scope, as FastAPI's do (the metrics label)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def add_hot_route(
    app: FastAPI,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    body: type[BaseModel],
    answer: type[BaseModel],
    summary: str,
    responses: dict[int | str, dict[str, Any]] | None = None,
    tags: list[str | Enum] | None = None,
    operation_id: str | None = None,
) -> None:
    """Serve a POST endpoint as a plain Starlette route in front of FastAPI's routes.

    For a one-row prediction FastAPI's per-request machinery (dependency solving, body and
    response handling) costs more than the model itself: about 16 µs of a 70 µs request on the
    2-core reference machine. The endpoint takes the Request, reads the body with
    `shared.schemas.parse_body` and returns bytes. Errors still go through FastAPI's exception
    handlers (422, 503), and the OpenAPI document describes the route with the body and answer
    models as if FastAPI served it, so /docs and the contract tests see no difference.
    """
    app.router.routes.insert(0, _HotRoute(path, endpoint, methods=["POST"]))

    async def documented(**parameters: Any) -> Any:
        raise NotImplementedError  # never called: only its signature is read, for OpenAPI

    # The signature FastAPI documents: the path's parameters (strings), the body, the answer.
    path_parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in re.findall(r"{(\w+)}", path)
    ]
    body_parameter = inspect.Parameter("payload", inspect.Parameter.KEYWORD_ONLY, annotation=body)
    documented.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*path_parameters, body_parameter], return_annotation=answer
    )
    documented.__doc__ = endpoint.__doc__
    docs = APIRoute(
        path,
        documented,
        methods=["POST"],
        summary=summary,
        responses=responses,
        tags=tags or ["model"],
        operation_id=operation_id or endpoint.__name__,
    )
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.router.routes.append(docs)
            try:
                app.openapi_schema = build_openapi()
            finally:
                app.router.routes.remove(docs)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class Slot(Generic[T]):
    """Something a service must load before it can serve (a model, a card, a preprocessing).

    `loading()` (in the lifespan) loads it in a thread and retries until it loads, so the service
    answers /health at once, is not ready while it loads (the reason is in /ready), and recovers
    by itself once the file appears. `require()` gives it to a request, or the 503.
    """

    def __init__(
        self, what: str, source: object, load: Callable[[], T], retry_seconds: float = 1.0
    ) -> None:
        self.what = what
        self.source = source
        self._load = load
        self.retry_seconds = retry_seconds
        self.value: T | None = None
        self.not_ready_reason = f"{what} loading from {source}"

    async def fill(self) -> None:
        while self.value is None:
            try:
                self.value = await asyncio.to_thread(self._load)
            # Whatever stops the load (missing file, bad bytes) leaves the service not ready,
            # with the reason, and is tried again: the file may still be on its way.
            except Exception as exc:
                self.not_ready_reason = f"{self.what} not loadable from {self.source}: {exc}"
                logger.warning(self.not_ready_reason)
                await asyncio.sleep(self.retry_seconds)
        logger.info("%s loaded from %s", self.what, self.source)

    @asynccontextmanager
    async def loading(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.fill())
        try:
            yield
        finally:
            task.cancel()

    def readiness(self) -> str | None:
        return None if self.value is not None else self.not_ready_reason

    def require(self) -> T:
        if self.value is None:
            raise not_ready(self.not_ready_reason)
        return self.value


def not_ready(reason: str) -> HTTPException:
    """The 503 a service answers when it cannot serve yet."""
    return HTTPException(status_code=503, detail=reason, headers={"Retry-After": "1"})
