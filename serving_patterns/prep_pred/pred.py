"""Prediction service: preprocessed features in, predictions out, onnxruntime only.

It knows nothing of images: its input is the feature rows the prep service makes, stamped
with the version of the preprocessing that made them. Features from any other preprocessing
would be numbers of the right shape and the wrong meaning, so a version that does not equal
the model's is refused with 409, naming both.

    uvicorn serving_patterns.prep_pred.pred:create_app --factory --port 8041
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from serving_patterns.prep_pred.schemas import FeaturesRequest
from serving_patterns.prep_pred.settings import PredSettings
from shared.logs import request_id_var
from shared.model import ModelSlot, Predictor
from shared.schemas import Metadata, PredictResponse, check_rows
from shared.service import create_service, not_ready


def create_app(settings: PredSettings | None = None) -> FastAPI:
    settings = settings or PredSettings()
    model = ModelSlot(settings.model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(model.load())
        yield
        loading.cancel()

    app = create_service("pred", settings, lifespan, description=__doc__ or "")
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
            input_schema=FeaturesRequest.model_json_schema(),
            sample_input={"data": card.sample_input, "preprocess_version": card.version},
            extra=card.extra,
        )

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            409: {"description": "Features made by a preprocessing of another version"},
            400: {"description": "Body is not JSON"},
            413: {"description": "Body too large"},
            422: {"description": "Not preprocessed features of the model's width"},
            503: {"description": "Model not loaded yet"},
        },
    )
    async def predict(body: FeaturesRequest) -> PredictResponse:
        """Predict the digit of each row of preprocessed features (made by the prep service)."""
        predictor = loaded()
        version = predictor.card.version
        if body.preprocess_version != version:
            raise HTTPException(
                status_code=409,
                detail=(
                    f"preprocessing version {body.preprocess_version} does not match model "
                    f"version {version}: features must come from the preprocessing fitted "
                    "with this model"
                ),
            )
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        return PredictResponse(
            predictions=predictor.predict(body.data),
            model_version=version,
            request_id=request_id_var.get(),
        )

    return app
