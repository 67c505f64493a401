"""Web single: one process holds the API, the preprocessing and the model.

The exported model is a scikit-learn pipeline (StandardScaler then LogisticRegression) converted
to ONNX, so raw iris measurements go in and the scaling runs inside the same onnxruntime call as
the classifier: nothing else needs to run to get a prediction.

    uvicorn serving_patterns.web_single.app:create_app --factory --port 8000
"""

# Why /predict is a hand-made Starlette route (shared.service.add_hot_route), not an ordinary
# `@app.post`: an ordinary route doing the same work (takes the Request, validates the raw body
# in one pydantic call, returns a Response, schema through openapi_extra) served 0.61 to 0.92 of
# this route's requests/s, median 0.81, over 6 interleaved wrk runs, and used 1.25 x its CPU per
# request. Switching needed 5% or less. Measured 2026-12-02 with `make bench PATTERN=web-single`
# (benchmarks/route_variants.py) on 2 AMD EPYC cores shared with other test runs; the figures
# are in CONTRIBUTING.md.

from fastapi import FastAPI, Request, Response

from serving_patterns.web_single.settings import Settings
from shared.logs import request_id_var
from shared.model import create_model_service
from shared.schemas import (
    PredictRequest,
    PredictResponse,
    check_rows,
    parse_body,
)
from shared.service import BODY_ERRORS, add_hot_route


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app, model = create_model_service("web-single", settings, description=__doc__ or "")

    # async def on purpose: a one-row onnxruntime call takes microseconds, less than a hand-off
    # to the thread pool would cost. A heavy model would want `def` (or a process pool).
    async def predict(request: Request) -> Response:
        """Predict the iris species of each row of raw measurements (cm)."""
        body = parse_body(await request.body(), PredictRequest)
        predictor = model.require()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        answer = PredictResponse(
            predictions=await predictor.apredict(body.data),
            model_version=predictor.card.version,
            request_id=request_id_var.get(),
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    # The hot path skips FastAPI's per-request machinery: see the top of this file.
    add_hot_route(
        app,
        "/predict",
        predict,
        body=PredictRequest,
        answer=PredictResponse,
        summary="Predict",
        responses={
            **BODY_ERRORS,
            422: {"description": "Input does not fit the model"},
            503: {"description": "Model not loaded yet"},
        },
    )
    return app
