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
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from serving_patterns.synchronous.settings import WebappSettings
from shared.http import ServiceClient, read_answer
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


def create_app(settings: WebappSettings | None = None) -> FastAPI:
    settings = settings or WebappSettings()
    # One pooled client for the app's life: connections to the predictor are reused, and every
    # call carries the request id of the request being served.
    predictor = ServiceClient.configured("the predictor", str(settings.predictor_url), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with predictor:
            yield

    app = create_service(
        "synchronous-webapp",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"predictor": predictor.readiness},
        liveness={"predictor client": predictor.liveness},
    )
    app.state.predictor = predictor  # for tests that break its pool on purpose

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The predictor gave an answer the web app cannot use"},
        503: {"description": "The predictor is unreachable, saturated or not ready; retry later"},
        504: {"description": "The predictor did not answer within the timeout"},
    }

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """The predictor's model: name, version, input schema and a sample input."""
        response = await predictor.call("GET", "/metadata")
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
        response = await predictor.call("POST", "/predict", payload)
        answer = read_answer(response, PredictResponse)
        return WebappResponse(
            predictions=answer.predictions,
            model_version=answer.model_version,
            request_id=request_id_var.get(),
            follow_ups=[follow_up(p, settings.min_confidence) for p in answer.predictions],
        )

    return app
