"""Synchronous pattern, the prediction server: a plain REST model server on the iris model.

Any model server that answers POST /predict would do; this one is the shared API contract over
the shared Predictor, plus one knob, an artificial delay, so the web app's blocking and its
timeout can be seen (and tested) with a model that otherwise answers in microseconds.

    .venv/bin/uvicorn serving_patterns.synchronous.predictor:create_app --factory --port 8011
"""

import asyncio

from fastapi import FastAPI

from serving_patterns.synchronous.settings import PredictorSettings
from shared.logs import request_id_var
from shared.model import create_model_service
from shared.schemas import PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    app, model = create_model_service("synchronous-predictor", settings, __doc__ or "")

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            **BODY_ERRORS,
            503: {"description": "Model not loaded yet"},
        },
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        """Predict the iris species of each row of raw measurements (cm)."""
        predictor = model.require()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        if settings.delay_seconds:
            # Stands in for a slow model; asyncio.sleep keeps the server answering other calls.
            await asyncio.sleep(settings.delay_seconds)
        return PredictResponse(
            predictions=await predictor.apredict(body.data),
            model_version=predictor.card.version,
            request_id=request_id_var.get(),
        )

    return app
