"""The API: the light model answers at once; the same rows go to the heavy model through Celery.

POST /predict scores the rows with the light model, in this process (microseconds: a hop to a
model server would cost more than the model), queues the same rows as a heavy job, and answers
with the light predictions and the job id. GET /jobs/{id} reads the heavy job's state from
Celery's result backend: pending (queued or running), done with the heavy predictions, or failed
with the reason; an id the backend has never seen is a 404.

Celery's client is synchronous, so each call to it (one Redis write and one publish per submit,
one Redis read per poll) runs in a thread, within a deadline: the event loop never waits on
Redis, and while Redis is away the light answer still goes out, saying the heavy job was not
queued. A failing or slow heavy model never reaches this process at all.

    uvicorn serving_patterns.multiple_stage_prediction.api:create_app --factory --port 8100
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from serving_patterns.multiple_stage_prediction import jobs
from serving_patterns.multiple_stage_prediction.settings import ApiSettings
from shared.logs import request_id_var
from shared.model import Predictor
from shared.schemas import (
    IRIS_SAMPLE_PREDICTIONS,
    Metadata,
    Prediction,
    PredictRequest,
    PredictResponse,
    check_rows,
)
from shared.service import BODY_ERRORS, Slot, create_service

logger = logging.getLogger(__name__)

JOB_ID = "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d"
REQUEST_ID = "0d1c2b3a49586776a5b4c3d2e1f00112"
EXAMPLE_ROWS: list[JsonValue] = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]

T = TypeVar("T")


class LightAnswer(PredictResponse):
    """The light model's predictions now, and the handle of the heavy model's answer to come."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": IRIS_SAMPLE_PREDICTIONS,
                    "model_version": "1.0.0",
                    "request_id": REQUEST_ID,
                    "job_id": JOB_ID,
                    "heavy_status": "pending",
                }
            ]
        }
    )

    job_id: str | None
    heavy_status: Literal["pending", "not queued"]
    # Only when the job was not queued: why. (Left out otherwise, as /docs leaves out the nulls
    # of examples.)
    heavy_error: str | None = Field(None, exclude_if=lambda error: error is None)


class HeavyAnswer(BaseModel):
    """A heavy job: pending, then the heavy model's predictions for the same rows, or failed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": JOB_ID,
                    "status": "done",
                    "state": "SUCCESS",
                    "predictions": IRIS_SAMPLE_PREDICTIONS,
                    "model_version": "1.0.0",
                    "request_id": REQUEST_ID,
                    "data": EXAMPLE_ROWS,
                    "error": None,
                }
            ]
        }
    )

    job_id: str
    status: Literal["pending", "done", "failed"]
    state: str  # Celery's own: QUEUED (ours), STARTED, SUCCESS, FAILURE...
    predictions: list[Prediction] | None = None
    model_version: str | None = None
    request_id: str  # the submit's, shared with the light answer
    data: list[list[float]]  # the rows both models scored
    error: str | None = None


# Celery's states as the client sees them. PENDING is Celery's answer for an id it has no
# record of: with QUEUED written before every send, that means unknown (or expired).
PENDING_STATES = {jobs.QUEUED, "STARTED", "RETRY"}


def heavy_answer(job_id: str, meta: dict[str, Any]) -> HeavyAnswer:
    """GET /jobs/{id}'s answer from the result backend's record, or the 404."""
    state = meta["status"]
    if state == "PENDING":
        raise HTTPException(404, f"no job {job_id}: never submitted, or expired")
    result: Any = meta.get("result")
    answer: dict[str, Any] = {
        "job_id": job_id,
        "state": state,
        "request_id": (meta.get("kwargs") or {}).get("request_id", "-"),
        "data": (meta.get("args") or [[]])[0],
    }
    if state in PENDING_STATES:
        return HeavyAnswer(status="pending", **answer)
    if state == "SUCCESS":
        return HeavyAnswer(status="done", **answer, **result)
    # FAILURE carries the exception the task raised; REVOKED and the like, only their name.
    error = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else state
    return HeavyAnswer(status="failed", error=error, **answer)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    light = Slot("light model", settings.model_dir, lambda: Predictor(settings.model_dir))
    celery = jobs.create_celery(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with light.loading():
                yield
        finally:
            celery.close()

    # Ready once the light model is loaded, whatever Redis does: the light answer is the one
    # this service owes, and taking it out of rotation while Redis is away would lose that too.
    app = create_service(
        "multiple-stage-prediction-api",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"light model": light.readiness},
    )

    async def queue_call(call: Callable[..., T], *args: Any) -> T:
        """A blocking Celery call in a thread, bounded by the Redis timeout (TimeoutError)."""
        return await asyncio.wait_for(
            asyncio.to_thread(call, celery, *args), settings.redis_timeout_seconds
        )

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        """The light model's card (the heavy one scores the same features)."""
        return light.require().card.metadata(PredictRequest)

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            **BODY_ERRORS,
            422: {"description": "Input does not fit the model; nothing is queued"},
            503: {"description": "Light model not loaded yet"},
        },
    )
    async def predict(body: PredictRequest) -> LightAnswer:
        """The light model's predictions at once, and the job id of the heavy model's answer."""
        predictor = light.require()
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        # The light model first: rows it cannot score (422) are never queued.
        predictions = predictor.predict(body.data)
        request_id = request_id_var.get()
        job_id, error = None, None
        try:
            job_id = await queue_call(jobs.submit, body.data, request_id)
        # Whatever stops the submit (Redis away, slow, refusing): the light answer goes out.
        except Exception as exc:
            error = f"heavy job not queued: {type(exc).__name__}: {exc}".rstrip(": ")
            logger.warning(error)
        return LightAnswer(
            predictions=predictions,
            model_version=predictor.card.version,
            request_id=request_id,
            job_id=job_id,
            heavy_status="pending" if job_id else "not queued",
            heavy_error=error,
        )

    @app.get(
        "/jobs/{job_id}",
        tags=["model"],
        summary="The heavy model's answer: pending, done with its predictions, or failed",
        responses={
            404: {"description": "No such job (never submitted, or expired)"},
            503: {"description": "The result backend (Redis) is unavailable"},
        },
    )
    async def job(job_id: Annotated[str, PathParam(max_length=64)]) -> HeavyAnswer:
        try:
            meta = await queue_call(jobs.read, job_id)
        except Exception as exc:
            raise HTTPException(
                503,
                f"result backend unavailable: {type(exc).__name__}: {exc}".rstrip(": "),
                headers={"Retry-After": "1"},
            ) from None
        return heavy_answer(job_id, meta)

    return app
