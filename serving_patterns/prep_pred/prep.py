"""Preprocess service: the entry point. Raw images in; features out to pred; its answer back.

The client never computes features. This service applies the preprocessing fitted with the
model (numpy only), calls the prediction service over HTTP with the request id, and passes the
prediction back. When pred is down, slow or refuses, prep itself stays up and says so:
503 (down, not ready, or a version mismatch), 504 (too slow), 502 (an answer it cannot use).

    .venv/bin/uvicorn serving_patterns.prep_pred.prep:create_app --factory --port 8040
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from serving_patterns.prep_pred.preprocessing import Preprocessor
from serving_patterns.prep_pred.schemas import IMAGE_SIDE, ImagesRequest, PrepResponse
from serving_patterns.prep_pred.settings import PrepSettings
from shared.http import RETRY_AFTER, ServiceClient, detail
from shared.schemas import Metadata, PredictResponse
from shared.service import BODY_ERRORS, Slot, create_service


def create_app(settings: PrepSettings | None = None) -> FastAPI:
    settings = settings or PrepSettings()
    preprocessing = Slot(
        "preprocessing",
        settings.preprocess_path,
        lambda: Preprocessor(settings.preprocess_path),
    )

    pred = ServiceClient(
        "the prediction service",
        settings.pred_url,
        settings.pred_timeout_seconds,
        settings.pred_max_connections,
        settings.pred_max_in_flight,
        settings.leak_grace_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with preprocessing.loading(), pred:
            yield

    # Readiness is prep's own: its preprocessing is loaded. pred being down does not take prep
    # out of rotation, or clients would get connection errors instead of prep's clear 503.
    app = create_service(
        "prep",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"preprocessing": preprocessing.readiness},
        liveness={"pred client": pred.liveness},
    )
    app.state.pred = pred  # for tests that watch its calls

    def loaded() -> Preprocessor:
        return preprocessing.require()

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        p = loaded()
        return Metadata(
            model_name=p.name,
            model_version=p.version,
            feature_names=[f"pixel_{r}_{c}" for r in range(IMAGE_SIDE) for c in range(IMAGE_SIDE)],
            labels=p.labels,
            input_schema=ImagesRequest.model_json_schema(),
            sample_input={"data": p.sample_input},
            extra={"model_input": p.feature_names},
        )

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            **BODY_ERRORS,
            422: {"description": "Not images of the expected shape and range"},
            502: {"description": "The prediction service gave an answer prep cannot use"},
            503: {"description": "Preprocessing not loaded, or the prediction service unavailable"},
            504: {"description": "The prediction service did not answer in time"},
        },
    )
    async def predict(body: ImagesRequest) -> PrepResponse:
        """Predict the digit in each raw 8x8 image: preprocess here, predict in pred."""
        preprocessor = loaded()
        if len(body.data) > settings.max_rows:
            raise RequestValidationError(
                [
                    {
                        "type": "too_long",
                        "loc": ("body", "data"),
                        "msg": f"at most {settings.max_rows} images per request, "
                        f"got {len(body.data)}",
                    }
                ]
            )
        features = preprocessor.transform(body.data)
        answer = await call_pred(pred, features.tolist(), preprocessor.version)
        return PrepResponse(**answer.model_dump(), preprocess_version=preprocessor.version)

    async def call_pred(
        pred: ServiceClient, rows: list[list[float]], version: str
    ) -> PredictResponse:
        """pred's prediction, or the HTTPException that tells the client what went wrong there."""
        body = json.dumps({"data": rows, "preprocess_version": version}).encode()
        # 504 when pred is too slow, 503 when it is down or too many calls already wait on it.
        response = await pred.call("POST", "/predict", body)
        if response.status_code == 200:
            try:
                return PredictResponse.model_validate_json(response.content)
            except ValidationError:
                raise HTTPException(502, "prediction service answered an unreadable body") from None
        problem = detail(response)
        if response.status_code in (409, 503):
            # 409: prep and pred carry different versions (mid-rollout, or a bad deploy).
            # 503: pred is up but its model is not loaded yet. Both pass once pred catches up.
            raise HTTPException(503, f"prediction service refused: {problem}", RETRY_AFTER)
        raise HTTPException(502, f"prediction service answered {response.status_code}: {problem}")

    return app
