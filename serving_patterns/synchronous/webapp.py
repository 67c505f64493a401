"""Synchronous pattern, the web app: it calls the predictor, waits, and branches on the answer.

The client-facing service of the pattern. For each POST /predict it calls the prediction server
over HTTP and waits for the answer; its next step, the follow-up it shows the user, depends on
the predicted class. The wait is bounded: one deadline covers the whole predictor call, so a
slow predictor costs the user about `timeout_seconds` and a 504, never a hang; a predictor that
is down gives a 503 at once.

    .venv/bin/uvicorn serving_patterns.synchronous.webapp:create_app --factory --port 8010
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx2
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from serving_patterns.synchronous.settings import WebappSettings
from shared.http import ServiceClient
from shared.http import detail as upstream_detail
from shared.logs import request_id_var
from shared.schemas import (
    IRIS_SAMPLE_PREDICTIONS,
    Metadata,
    Prediction,
    PredictRequest,
    PredictResponse,
    check_rows,
)
from shared.service import BODY_ERRORS, create_service

logger = logging.getLogger(__name__)


class FollowUp(BaseModel):
    action: str
    message: str


class WebappResponse(PredictResponse):
    """The predictor's answer, plus what the web app does next for each row."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": IRIS_SAMPLE_PREDICTIONS,
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "follow_ups": [
                        {
                            "action": "offer_seeds",
                            "message": "Iris setosa: hardy down to -40 °C. Seeds ship today.",
                        },
                        {
                            "action": "book_nursery_visit",
                            "message": "Iris virginica: best planted by our nursery. Book a visit.",
                        },
                    ],
                }
            ]
        }
    )

    follow_ups: list[FollowUp]


# What the web app does next, per predicted class: the business step the prediction unlocks.
FOLLOW_UPS = {
    "setosa": FollowUp(
        action="offer_seeds", message="Iris setosa: hardy down to -40 °C. Seeds ship today."
    ),
    "versicolor": FollowUp(
        action="offer_bulbs", message="Iris versicolor: likes wet feet. Pond-side bulbs in stock."
    ),
    "virginica": FollowUp(
        action="book_nursery_visit",
        message="Iris virginica: best planted by our nursery. Book a visit.",
    ),
}


def follow_up(prediction: Prediction, min_confidence: float) -> FollowUp:
    """The next step for one prediction: a branch on the predicted class and its probability."""
    confidence = prediction.probabilities.get(prediction.label, 0.0)
    known = FOLLOW_UPS.get(prediction.label)
    # An unsure prediction, or a class this web app has no step for (a newer model), must not
    # send the user down a wrong path: ask a person instead.
    if known is None or confidence < min_confidence:
        return FollowUp(
            action="ask_for_photo",
            message=f"Maybe {prediction.label} ({confidence:.0%} sure): "
            "send a photo and a botanist will confirm.",
        )
    return known


Answer = TypeVar("Answer", bound=BaseModel)


def read_answer(response: httpx2.Response, model: type[Answer]) -> Answer:
    """The predictor's answer as `model`, or the HTTP error the web app's caller should get."""
    status = response.status_code
    if status == 200:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise HTTPException(502, "the predictor's answer does not fit the contract") from None
    detail = upstream_detail(response)
    if status in (413, 422):
        # The input does not fit the model (wrong width, too many rows): the caller's to fix.
        raise HTTPException(status, detail)
    if status == 503:
        raise HTTPException(
            503, f"the predictor is not ready: {detail}", headers={"Retry-After": "1"}
        )
    raise HTTPException(502, f"the predictor answered {status}: {detail}")


def create_app(settings: WebappSettings | None = None) -> FastAPI:
    settings = settings or WebappSettings()
    deadline = settings.timeout_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pooled client for the app's life: connections to the predictor are reused, and
        # every call carries the request id of the request being served.
        async with ServiceClient(
            "the predictor",
            str(settings.predictor_url),
            deadline,
            settings.max_connections,
            settings.max_in_flight,
            settings.leak_grace_seconds,
        ) as predictor:
            app.state.predictor = predictor
            yield

    # Both checks run only while the lifespan holds the client (the app serves then).
    async def predictor_ready() -> str | None:
        try:
            response = await app.state.predictor.call("GET", "/ready")
        except HTTPException as exc:
            return f"{settings.predictor_url}: {exc.detail}"
        return None if response.status_code == 200 else f"predictor not ready: {response.text}"

    def predictor_client_sends() -> str | None:
        return app.state.predictor.liveness()  # type: ignore[no-any-return]

    app = create_service(
        "synchronous-webapp",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"predictor": predictor_ready},
        liveness={"predictor client": predictor_client_sends},
    )

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The predictor gave an answer the web app cannot use"},
        503: {"description": "The predictor is unreachable, saturated or not ready; retry later"},
        504: {"description": "The predictor did not answer within the timeout"},
    }

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """The predictor's model: name, version, input schema and a sample input."""
        response = await request.app.state.predictor.call("GET", "/metadata")
        return read_answer(response, Metadata)

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            **BODY_ERRORS,
            **upstream_errors,
        },
    )
    async def predict(body: PredictRequest, request: Request) -> WebappResponse:
        """Identify the iris of each row, then choose the follow-up to show from the prediction."""
        # The synchronous step: nothing below runs until the predictor answers or time is up.
        # Bounded here, at the edge: re-serialised, a body near the size limit could grow past
        # the predictor's, and the caller would get a 413 about a size it did not send.
        check_rows(body.data, None, settings.max_rows)
        payload = body.model_dump_json().encode()
        response = await request.app.state.predictor.call("POST", "/predict", payload)
        answer = read_answer(response, PredictResponse)
        return WebappResponse(
            predictions=answer.predictions,
            model_version=answer.model_version,
            request_id=request_id_var.get(),
            follow_ups=[follow_up(p, settings.min_confidence) for p in answer.predictions],
        )

    return app
