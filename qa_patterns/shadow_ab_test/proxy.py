r"""Shadow A/B test pattern, the proxy: every client gets model A's answer, and model B gets a
copy of every request, which it answers to nobody.

- A is called as any upstream is (shared.http.ServiceClient: one deadline, 503/504 naming it),
  and its answer goes back to the client unchanged.
- The copy to B is started once A has answered, as a task of its own (`Shadow.send`), and the
  request never waits for it: B slow, failing or down changes nothing the client sees. B has its
  own deadline (`b_timeout_seconds`), after which the proxy lets go of the copy, and at most
  `b_max_in_flight` copies wait on B at once: beyond that a copy is skipped and counted, so a
  hung B costs the proxy a bounded number of tasks and connections, not memory without end.
- What B answered is not the proxy's business: each model server records its own predictions
  under the request's id (shared/inference_log.py), which both calls carry. The proxy counts
  only what became of each copy (`shadow_copies_total{outcome}`: answered, failed, timeout,
  unreachable, skipped).
- `PUT /shadow {"enabled": false}` takes B out of the shadow while the proxy runs (no restart,
  no dropped request), and `{"enabled": true}` puts it back; `GET /shadow` says where it stands.

nginx/shadow.conf.template is the same in nginx (`mirror`), with what it takes to keep nginx's
mirror from holding the client's connection while B works.

    .venv/bin/uvicorn qa_patterns.shadow_ab_test.proxy:create_app --factory --port 8210
"""

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import Counter as MetricCounter
from pydantic import BaseModel, ConfigDict, Field

from qa_patterns.shadow_ab_test.settings import ProxySettings
from shared.http import ServiceClient, opened, read_answer
from shared.schemas import Metadata, PredictRequest, PredictResponse, parse_body
from shared.service import BODY_ERRORS, add_hot_route, create_service

logger = logging.getLogger(__name__)

Outcome = Literal["answered", "failed", "timeout", "unreachable", "skipped"]
COPIES = MetricCounter(
    "shadow_copies_total",
    "Copies of /predict sent to model B, by what became of them",
    ["outcome"],
)


class ShadowState(BaseModel):
    """Whether B is in the shadow, and what became of the copies sent to it so far."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "enabled": True,
                    "model_b": "http://127.0.0.1:8212/",
                    "in_flight": 0,
                    "copies": {"answered": 2},
                }
            ]
        }
    )

    enabled: bool = Field(description="Requests are copied to B")
    model_b: str = Field(description="Where the copies go")
    in_flight: int = Field(description="Copies waiting on B now")
    copies: dict[Outcome, int] = Field(description="Copies sent since start, by outcome")


class ShadowChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    enabled: bool = Field(description="false takes B out of the shadow, true puts it back")


class Shadow:
    """The copies to B: fire and forget, bounded, counted."""

    def __init__(self, model_b: ServiceClient, enabled: bool, max_in_flight: int) -> None:
        self.model_b = model_b
        self.enabled = enabled
        self.max_in_flight = max_in_flight
        self.copies: Counter[Outcome] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def send(self, body: bytes) -> None:
        """Start a copy of the request to B, and return at once."""
        if not self.enabled:
            return
        if len(self._tasks) >= self.max_in_flight:
            self._count("skipped")
            return
        # The task runs in a copy of this request's context: B gets the same X-Request-ID.
        task = asyncio.create_task(self._copy(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, body: bytes) -> None:
        try:
            response = await self.model_b.call("POST", "/predict", body)
        except HTTPException as exc:
            self._count("timeout" if exc.status_code == 504 else "unreachable")
            return
        self._count("answered" if response.status_code == 200 else "failed")
        if response.status_code != 200:
            logger.info("model B answered %d: %s", response.status_code, response.text[:200])

    def _count(self, outcome: Outcome) -> None:
        self.copies[outcome] += 1
        COPIES.labels(outcome).inc()

    def state(self) -> ShadowState:
        return ShadowState(
            enabled=self.enabled,
            model_b=self.model_b.base_url,
            in_flight=len(self._tasks),
            copies=dict(self.copies),
        )

    async def close(self) -> None:
        """Let go of the copies still waiting on B (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()

    model_a = ServiceClient(
        "model A",
        str(settings.model_a_url),
        settings.a_timeout_seconds,
        leak_grace_seconds=settings.leak_grace_seconds,
    )
    model_b = ServiceClient(
        "model B",
        str(settings.model_b_url),
        settings.b_timeout_seconds,
        max_connections=settings.b_max_in_flight,
        max_in_flight=settings.b_max_in_flight,
        leak_grace_seconds=settings.leak_grace_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened([model_a, model_b]):
            # The copies in flight to B are tasks of this loop: made and cancelled with it.
            app.state.shadow = Shadow(model_b, settings.shadow, settings.b_max_in_flight)
            try:
                yield
            finally:
                await app.state.shadow.close()

    def clients_send() -> str | None:
        return model_a.liveness() or model_b.liveness()

    app = create_service(
        "shadow-ab-test-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        # A alone: a B that is down or not ready must not take the proxy out of rotation.
        readiness={"model A": model_a.readiness},
        liveness={"model clients": clients_send},
    )

    async def predict(request: Request) -> Response:
        """Model A's answer for each row; a copy of the request goes to model B, which answers
        to nobody."""
        body = await request.body()
        parse_body(body, PredictRequest)  # A and B get well-formed input only
        try:
            response = await model_a.call("POST", "/predict", body)
            read_answer(response, PredictResponse, "model A")  # an error of A's is the client's
        finally:
            # B's copy starts once A has answered, whatever A answered. Its task first runs when
            # this request next waits, which with uvicorn is after the answer is written: the
            # copy's work (building and sending B's request) stays out of the client's latency.
            request.app.state.shadow.send(body)
        return Response(response.content, media_type="application/json")

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "Model A gave an answer the proxy cannot use"},
        503: {"description": "Model A is unreachable or not ready; retry after Retry-After"},
        504: {"description": "Model A did not answer within its deadline"},
    }
    add_hot_route(
        app,
        "/predict",
        predict,
        PredictRequest,
        PredictResponse,
        "Predict with model A; model B gets a copy in the shadow",
        responses={**BODY_ERRORS, **upstream_errors},
    )

    @app.get("/shadow", tags=["shadow"])
    async def shadow_state(request: Request) -> ShadowState:
        """Whether requests are copied to B, and what became of the copies so far."""
        state: ShadowState = request.app.state.shadow.state()
        return state

    @app.put("/shadow", tags=["shadow"], responses=BODY_ERRORS)
    async def change_shadow(change: ShadowChange, request: Request) -> ShadowState:
        """Take B out of the shadow (enabled: false) or put it back, while the proxy runs."""
        shadow: Shadow = request.app.state.shadow
        if shadow.enabled != change.enabled:
            logger.warning("shadow to model B %s", "on" if change.enabled else "off")
        shadow.enabled = change.enabled
        return shadow.state()

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """Model A's card: name, version, input schema and a sample input."""
        return read_answer(await model_a.call("GET", "/metadata"), Metadata, "model A")

    return app
