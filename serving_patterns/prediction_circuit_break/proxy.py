r"""Prediction circuit break pattern, the proxy: it keeps the predictor within what it can take.

Two guards stand between a client and the predictor, each answering with the same fallback
body (503, Retry-After, `"predictions": null` and a `fallback` reason a client can act on):

- Shedding, first and cheapest: at most `max_in_flight` predictions are at the predictor at
  once. A request over that is answered at once, before its body is even parsed, and never
  reaches the predictor (`"fallback": "shed"`). Nothing is queued, so an admitted request
  waits for nothing but the model, and once the load drops every request is admitted again:
  there is nothing to reset.
- A circuit breaker, for a predictor that fails rather than one that is busy (purgatory's
  AsyncCircuitBreakerFactory): `failure_threshold` failures in a row (5xx, unreachable,
  timeout; not the caller's 4xx) open it, and for `open_seconds` every request gets the
  fallback without a call (`"fallback": "circuit open"`). Then one request goes through as
  the probe (half-open; the others keep the fallback while it runs): its success closes the
  circuit, its failure opens it again.

The admitted answer is the predictor's, unchanged. nginx/predict.conf.template is the same
shedding in nginx, with the same fallback body.

    .venv/bin/uvicorn serving_patterns.prediction_circuit_break.proxy:create_app \
        --factory --port 8090
"""

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from pydantic import BaseModel, ConfigDict

from serving_patterns.prediction_circuit_break.settings import ProxySettings
from shared.http import ServiceClient, read_answer
from shared.logs import request_id_var
from shared.schemas import Metadata, PredictRequest, PredictResponse, parse_body
from shared.service import BODY_ERRORS, add_hot_route, create_service

logger = logging.getLogger(__name__)

CIRCUIT = "predictor"
Fallback = Literal["shed", "circuit open", "predictor unavailable"]


class FallbackResponse(BaseModel):
    """What a request that was not predicted gets, with 503: the contract's fields, empty, and
    what the client needs to fall back (a default answer, a notice) and to know when to retry."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": None,
                    "model_version": None,
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "fallback": "shed",
                    "detail": "over the limit of 16 predictions at once: shed before the predictor",
                    "retry_after_seconds": 1,
                }
            ]
        }
    )

    predictions: None = None
    model_version: None = None
    request_id: str
    fallback: Fallback
    detail: str
    retry_after_seconds: int


def fallback(reason: Fallback, detail: str, retry_after: int) -> Response:
    body = FallbackResponse(
        request_id=request_id_var.get(),
        fallback=reason,
        detail=detail,
        retry_after_seconds=retry_after,
    )
    return Response(
        body.model_dump_json(),
        status_code=503,
        media_type="application/json",
        headers={"Retry-After": str(retry_after)},
    )


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    limit = settings.max_in_flight
    in_flight = 0  # predictions admitted and not yet answered
    probing = False  # a half-open circuit's one probe is at the predictor
    # A failure is what the predictor did: the caller's own mistakes (4xx) do not count.
    breakers = AsyncCircuitBreakerFactory(
        default_threshold=settings.failure_threshold,
        default_ttl=settings.open_seconds,
        exclude=[(HTTPException, lambda exc: exc.status_code < 500)],
    )

    def circuit_changed(name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            logger.warning("circuit to the %s is now %s", name, event.state)

    breakers.add_listener(circuit_changed)

    predictor = ServiceClient(
        "the predictor",
        str(settings.predictor_url),
        settings.timeout_seconds,
        # Two connections more than the limit: /ready and /metadata answer while the
        # predictions are at it. The shedding above is what bounds the predictions.
        max_connections=limit + 2,
        max_in_flight=limit + 2,
        leak_grace_seconds=settings.leak_grace_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await breakers.initialize()
        async with predictor:
            yield

    app = create_service(
        "prediction-circuit-break-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"predictor": predictor.readiness},
        liveness={"predictor client": predictor.liveness},
    )

    async def predict_through_breaker(body: bytes) -> Response:
        nonlocal probing
        breaker = await breakers.get_breaker(CIRCUIT)
        if probing:  # purgatory lets every request through while half-open: we send one
            return circuit_open(breaker.context.opened_at)
        probe = False
        try:
            async with breaker:  # raises OpenedState while open
                probe = probing = breaker.context.state == "half-opened"
                response = await predictor.call("POST", "/predict", body)
                answer = read_answer(response, PredictResponse)  # a 5xx raises: a failure
        except OpenedState as opened:
            return circuit_open(opened.opened_at)
        except HTTPException as exc:
            if exc.status_code == 503:  # unreachable, not ready: the client can fall back
                return fallback("predictor unavailable", str(exc.detail), 1)
            raise
        finally:
            if probe:
                probing = False
        return Response(answer.model_dump_json(), media_type="application/json")

    def circuit_open(opened_at: float | None) -> Response:
        left = (opened_at or time.time()) + settings.open_seconds - time.time()
        return fallback(
            "circuit open",
            f"the predictor is failing: circuit open, a probe goes through in {max(left, 0):.1f} s",
            max(1, math.ceil(left)),
        )

    async def predict(request: Request) -> Response:
        """Predict the iris species of each row, unless the predictor is at its limit or failing:
        then 503 at once with the fallback body."""
        nonlocal in_flight
        if in_flight >= limit:
            return fallback(
                "shed",
                f"over the limit of {limit} predictions at once: shed before the predictor",
                settings.retry_after_seconds,
            )
        in_flight += 1
        try:
            body = await request.body()
            parse_body(body, PredictRequest)  # the predictor gets well-formed input only
            return await predict_through_breaker(body)
        finally:
            in_flight -= 1

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The predictor gave an answer the proxy cannot use"},
        503: {
            "model": FallbackResponse,
            "description": "Not predicted: over the limit (shed), circuit open, or the "
            "predictor unavailable; use the fallback, retry after Retry-After",
        },
        504: {"description": "The predictor did not answer within the timeout"},
    }
    add_hot_route(
        app,
        "/predict",
        predict,
        PredictRequest,
        PredictResponse,
        "Predict, or the fallback at once when the predictor is at its limit or failing",
        responses={**BODY_ERRORS, **upstream_errors},
    )

    @app.get(
        "/metadata",
        tags=["model"],
        responses={
            **upstream_errors,
            503: {"description": "The predictor is unreachable or not ready; retry later"},
        },
    )
    async def metadata(request: Request) -> Metadata:
        """The predictor's model: name, version, input schema and a sample input."""
        return read_answer(await predictor.call("GET", "/metadata"), Metadata)

    return app
