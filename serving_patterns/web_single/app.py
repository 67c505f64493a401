"""Web single: one process holds the API, the preprocessing and the model.

The exported model is a scikit-learn pipeline (StandardScaler then LogisticRegression) converted
to ONNX, so raw iris measurements go in and the scaling runs inside the same onnxruntime call as
the classifier: nothing else needs to run to get a prediction.

    uvicorn serving_patterns.web_single.app:create_app --factory --port 8000
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from serving_patterns.web_single.settings import Settings
from shared.logs import request_id_var
from shared.model import ModelSlot, Predictor
from shared.schemas import (
    Metadata,
    PredictRequest,
    PredictResponse,
    check_rows,
    parse_body,
)
from shared.service import add_hot_route, create_service, not_ready


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    model = ModelSlot(settings.model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(model.load())
        yield
        loading.cancel()

    app = create_service("web-single", settings, lifespan, description=__doc__ or "")
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

    # async def on purpose: a one-row onnxruntime call takes microseconds, less than a hand-off
    # to the thread pool would cost. A heavy model would want `def` (or a process pool).
    async def predict(request: Request) -> Response:
        """Predict the iris species of each row of raw measurements (cm)."""
        body = parse_body(await request.body(), PredictRequest)
        predictor = loaded()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        answer = PredictResponse(
            predictions=predictor.predict(body.data),
            model_version=predictor.card.version,
            request_id=request_id_var.get(),
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    # The hot path skips FastAPI's per-request machinery; see add_hot_route for the figures.
    add_hot_route(
        app,
        "/predict",
        predict,
        body=PredictRequest,
        answer=PredictResponse,
        summary="Predict",
        responses={
            413: {"description": "Body too large"},
            422: {"description": "Input does not fit the model"},
            503: {"description": "Model not loaded yet"},
        },
    )

    return app
