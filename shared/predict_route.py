"""The contract's POST /predict for a model server, with an injected delay for demonstrations.

Patterns whose model servers differ only by model directory (a chain of stages, a fan-out to
several models) serve each one with `serve_model`: create_model_service plus this route. The
delay (off by default) stands in for a slow model: asyncio.sleep keeps the server answering
other calls, so what a caller sees (the sum of a chain, the slowest of a fan-out, a timeout) is
the pattern's doing, not the server's.

`record=` (off by default) makes the server record each prediction it answers into the
inference log (shared/inference_log.py: request id, variant, rows, answer, latency), without
waiting for Redis: the QA patterns compare what two models answered to the same requests.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from shared.logs import request_id_var
from shared.model import create_model_service
from shared.schemas import PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS
from shared.settings import ModelServiceSettings

if TYPE_CHECKING:  # imported where used: only a server that records needs a Redis client
    from shared.inference_log import InferenceLog, Recording


def serve_model(
    name: str,
    settings: ModelServiceSettings,
    delay_ms: int = 0,
    description: str = "",
    record: "Recording | None" = None,
) -> FastAPI:
    """A model server for the model in settings.model_dir: /predict waits delay_ms first, and
    with `record`, records each answer it gives into the inference log."""
    app, model = create_model_service(name, settings, description)
    log = _recording(app, record) if record is not None else None

    @app.post(
        "/predict",
        tags=["model"],
        responses={**BODY_ERRORS, 503: {"description": "Model not loaded yet"}},
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        """Label and class probabilities for each row of the model's features."""
        started = time.perf_counter()
        predictor = model.require()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        predictions = await predictor.apredict(body.data)
        request_id = request_id_var.get()
        if log is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            version = predictor.card.version
            log.record_answer(request_id, version, body.data, predictions, latency_ms)
        return PredictResponse(
            predictions=predictions,
            model_version=predictor.card.version,
            request_id=request_id,
        )

    # /docs shows this model's sample rows (its card's) and its answer to them, not the contract's
    # default iris example, which another model would refuse or answer otherwise. Filled in once
    # the model is loaded; FastAPI builds the document once and keeps it.
    build_openapi = app.openapi
    filled = False

    def openapi() -> dict[str, Any]:
        nonlocal filled
        document = build_openapi()
        if not filled and model.value is not None:
            card = model.value.card
            answer = PredictResponse(
                predictions=model.value.predict(card.sample_input),
                model_version=card.version,
                request_id=EXAMPLE_REQUEST_ID,
            )
            schemas = document["components"]["schemas"]
            schemas["PredictRequest"]["examples"] = [{"data": card.sample_input}]
            schemas["PredictResponse"]["examples"] = [answer.model_dump(mode="json")]
            filled = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _recording(app: FastAPI, record: "Recording") -> "InferenceLog":
    """The app's inference log, its sender running for as long as the app's lifespan."""
    from shared.inference_log import InferenceLog

    log = InferenceLog(record)
    model_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with model_lifespan(app), log.running():
            yield

    app.router.lifespan_context = lifespan
    app.state.inference_log = log
    return log


EXAMPLE_REQUEST_ID = "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d"
