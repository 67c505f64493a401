"""Synchronous pattern, the prediction server: a plain REST model server on the iris model.

Any model server that answers POST /predict would do; this one is the shared API contract over
the shared Predictor, plus one knob, an artificial delay, so the web app's blocking and its
timeout can be seen (and tested) with a model that otherwise answers in microseconds.

    uvicorn serving_patterns.synchronous.predictor:create_app --factory --port 8011
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving_patterns.synchronous.settings import PredictorSettings
from shared.logs import request_id_var
from shared.model import ModelSlot, Predictor
from shared.schemas import Metadata, PredictRequest, PredictResponse, check_rows
from shared.service import create_service, not_ready


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    model = ModelSlot(settings.model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(model.load())
        yield
        loading.cancel()

    app = create_service("synchronous-predictor", settings, lifespan, description=__doc__ or "")
    app.state.readiness["model"] = model.readiness

    def loaded() -> Predictor:
        if model.predictor is None:
            raise not_ready(model.not_ready_reason)
        return model.predictor

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        card = loaded().card
        return Metadata(
            model_name=card.name,
            model_version=card.version,
            feature_names=card.feature_names,
            labels=card.labels,
            input_schema=PredictRequest.model_json_schema(),
            sample_input={"data": card.sample_input},
            extra=card.extra,
        )

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            400: {"description": "Body is not JSON"},
            413: {"description": "Body too large"},
            503: {"description": "Model not loaded yet"},
        },
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        """Predict the iris species of each row of raw measurements (cm)."""
        predictor = loaded()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        if settings.delay_seconds:
            # Stands in for a slow model; asyncio.sleep keeps the server answering other calls.
            await asyncio.sleep(settings.delay_seconds)
        return PredictResponse(
            predictions=predictor.predict(body.data),
            model_version=predictor.card.version,
            request_id=request_id_var.get(),
        )

    return app
