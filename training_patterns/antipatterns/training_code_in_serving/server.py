"""The model server: raw rows in, predictions out, with the inference code and nothing else.

    .venv/bin/uvicorn training_patterns.antipatterns.training_code_in_serving.server:create_app \\
        --factory --port 8160

It imports inference.py (preprocessing, model, prediction), its own settings and the shared
service skeleton: no scikit-learn, no Optuna, no warehouse configuration. Its image installs
requirements/serving.txt, where those cannot even be imported (tests/test_isolation.py).
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI

from shared.logs import request_id_var
from shared.schemas import Metadata, PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS, Slot, create_service
from training_patterns.antipatterns.training_code_in_serving.inference import (
    FEATURES,
    RAW_FEATURES,
    InferenceModel,
    preprocess,
)
from training_patterns.antipatterns.training_code_in_serving.settings import ServerSettings

EXAMPLE_REQUEST_ID = "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d"


def build_app(
    name: str,
    settings: ServerSettings,
    preprocessing: Callable[[list[list[float]]], np.ndarray] = preprocess,
) -> FastAPI:
    """The server of the model in settings.model_dir, its rows preprocessed by `preprocessing`."""
    model = Slot(
        "model", settings.model_dir, lambda: InferenceModel(settings.model_dir, preprocessing)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with model.loading():
            yield

    app = create_service(
        name, settings, lifespan, description=__doc__ or "", readiness={"model": model.readiness}
    )

    @app.post(
        "/predict",
        tags=["model"],
        responses={**BODY_ERRORS, 503: {"description": "Model not loaded yet"}},
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        """Label and class probabilities for each row of raw iris measurements."""
        loaded = model.require()
        check_rows(body.data, RAW_FEATURES, settings.max_rows)
        return PredictResponse(
            predictions=loaded.predict(body.data),
            model_version=loaded.card.version,
            request_id=request_id_var.get(),
        )

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        card = model.require().card
        return Metadata(
            model_name=card.name,
            model_version=card.version,
            feature_names=RAW_FEATURES,
            labels=card.labels,
            input_schema=PredictRequest.model_json_schema(),
            sample_input={"data": card.sample_input},
            extra={"model_features": FEATURES},
        )

    # /docs shows this model's sample row and its real answer (the contract's default example
    # is another model's), filled in once the model is loaded.
    build_openapi = app.openapi
    filled = False

    def openapi() -> dict[str, Any]:
        nonlocal filled
        document = build_openapi()  # built once and kept by FastAPI: filled in place, once
        if not filled and model.value is not None:
            sample = model.value.card.sample_input
            answer = PredictResponse(
                predictions=model.value.predict(sample),
                model_version=model.value.card.version,
                request_id=EXAMPLE_REQUEST_ID,
            )
            schemas = document["components"]["schemas"]
            schemas["PredictRequest"]["examples"] = [{"data": sample}]
            schemas["PredictResponse"]["examples"] = [answer.model_dump(mode="json")]
            filled = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    return build_app("training-code-in-serving-server", settings or ServerSettings())
