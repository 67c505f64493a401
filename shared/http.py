"""The HTTP client a service uses to call another: pooled, bounded, under one deadline per call,
passing the request id.

    async with ServiceClient("the predictor", url, timeout_seconds=1.0) as predictor:
        response = await predictor.call("POST", "/predict", body)

What a caller gets instead of an answer, as the HTTPException its own client should see:
504 when the upstream did not answer within the deadline, 503 with Retry-After when it is
unreachable or when `max_in_flight` calls are already waiting on it (shed at once, rather than
queued behind them into a slow 504).

Why the calls are bounded here and not only by the pool: a request cancelled while it waits for
a pooled connection is where connection pools leak (encode/httpcore#1093, fixed in httpx2); the
semaphore keeps that wait out of the pool, so the pool is never asked for more connections than
it has. `liveness()` says when the pool holds a slot that no call does (a leak): a client in that
state can never send again, so /health fails and the orchestrator restarts the service.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2
from fastapi import HTTPException
from pydantic import BaseModel, ValidationError

from shared.logs import request_id_var
from shared.pools import LeakWatch
from shared.settings import UpstreamSettings

logger = logging.getLogger(__name__)

RETRY_AFTER = {"Retry-After": "1"}
# An idle pooled connection is dropped after this, before the upstream's uvicorn closes it (its
# --timeout-keep-alive, 5 s by default): with both at 5 s (httpx's default), a call that takes
# a connection in the instant uvicorn closes it fails before any answer (a 503 under load, seen
# in CI), a race no retry of a POST can make safe. Keep it below every upstream's idle timeout.
KEEPALIVE_EXPIRY_SECONDS = 2.0


async def _pass_request_id(request: httpx2.Request) -> None:
    request.headers["X-Request-ID"] = request_id_var.get()


class ServiceClient:
    """One client per upstream, made with the app and opened by its lifespan (`async with`),
    which closes it again: connections are reused in between. Made before the app, its
    `readiness` and `liveness` go straight into create_service's checks.

    `timeout_seconds` is one deadline on the whole call (waiting for a slot, connecting,
    sending, every read): httpx2's own timeouts bound each phase separately, so a server that
    trickles bytes could hold a call for many times the timeout.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        timeout_seconds: float,
        max_connections: int = 100,
        max_in_flight: int | None = None,
        leak_grace_seconds: float = 30.0,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        # Calls past the pool's size wait for a connection, up to this many (then 503 at once).
        self.max_in_flight = max_in_flight or 2 * max_connections
        self.http = self._pool()
        self._connections = asyncio.Semaphore(max_connections)
        self._in_flight = 0  # calls admitted: waiting for a connection or holding one
        self._sending = 0  # calls holding a connection slot
        self.leaks = LeakWatch(f"client of {name}", max_connections, leak_grace_seconds)

    @classmethod
    def configured(cls, name: str, base_url: str, settings: UpstreamSettings) -> Self:
        """A client bounded as a service's UpstreamSettings say."""
        return cls(
            name,
            base_url,
            settings.timeout_seconds,
            settings.max_connections,
            settings.max_in_flight,
            settings.leak_grace_seconds,
        )

    def _pool(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=self.base_url,
            timeout=httpx2.Timeout(self.timeout_seconds),
            limits=httpx2.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            ),
            event_hooks={"request": [_pass_request_id]},
        )

    async def __aenter__(self) -> Self:
        if self.http.is_closed:  # an app's lifespan run again (tests do): a new pool
            self.http = self._pool()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        """The upstream's answer, whatever its status; the HTTPException to raise otherwise."""
        if self._in_flight >= self.max_in_flight:
            logger.warning("%s: %d calls in flight, shedding", self.name, self._in_flight)
            raise HTTPException(
                503, f"{self.name} is saturated (calls in flight: {self._in_flight})", RETRY_AFTER
            )
        if content is not None:
            headers = {"content-type": "application/json", **(headers or {})}
        self._in_flight += 1
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self._connections:
                    self._sending += 1
                    try:
                        return await self.http.request(
                            method, path, content=content, headers=headers
                        )
                    finally:
                        self._sending -= 1
        except (TimeoutError, httpx2.TimeoutException):
            logger.warning(
                "%s gave no answer to %s %s within %g s",
                self.name,
                method,
                path,
                self.timeout_seconds,
            )
            raise HTTPException(
                504, f"{self.name} did not answer within {self.timeout_seconds:g} s"
            ) from None
        except httpx2.TransportError as exc:
            # Refused, reset, closed: the upstream is down or restarting. The pool drops the
            # broken connection, so the first call after it is back succeeds by itself.
            logger.warning("%s unreachable: %r", self.name, exc)
            raise HTTPException(
                503, f"{self.name} is unreachable ({type(exc).__name__})", RETRY_AFTER
            ) from None
        finally:
            self._in_flight -= 1

    async def readiness(self) -> str | None:
        """None while the upstream's GET /ready answers 200, else why not: a /ready check."""
        try:
            response = await self.call("GET", "/ready")
        except HTTPException as exc:
            return f"{self.base_url}: {exc.detail}"
        if response.status_code != 200:
            return f"{self.name} is not ready: {response.text}"
        return None

    def leaked_slots(self) -> int:
        """Pool connections in use by no call: each one is a slot the pool will never give back."""
        pool = self.http._transport._pool  # type: ignore[attr-defined]  # httpx2 exposes no other way
        busy = sum(1 for c in pool.connections if not (c.is_idle() or c.is_closed()))
        return max(0, busy - self._sending)

    def liveness(self) -> str | None:
        """None while the client can send; the reason once its pool has leaked for a while."""
        return self.leaks.check(self.leaked_slots())


@asynccontextmanager
async def opened(clients: Iterable[ServiceClient]) -> AsyncIterator[None]:
    """Several clients open at once (a proxy's backends, in its lifespan), closed together."""
    async with AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        yield


def detail(response: httpx2.Response) -> Any:
    """The `detail` an upstream's error answer gave (FastAPI's shape), else its text's start."""
    try:
        return response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


Answer = TypeVar("Answer", bound=BaseModel)


def read_answer(
    response: httpx2.Response, model: type[Answer], name: str = "the predictor"
) -> Answer:
    """An upstream model server's answer as `model`, or the HTTP error the caller should get."""
    status = response.status_code
    if status == 200:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise HTTPException(502, f"{name}'s answer does not fit the contract") from None
    reason = detail(response)
    if status in (413, 422):
        # The input does not fit the model (wrong width, too many rows): the caller's to fix.
        raise HTTPException(status, reason)
    if status == 503:
        raise HTTPException(503, f"{name} is not ready: {reason}", headers=RETRY_AFTER)
    raise HTTPException(502, f"{name} answered {status}: {reason}")
