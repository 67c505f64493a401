"""The proxy: takes a prediction request, queues it as a job and answers with the job id at once.

It never runs the model. POST /predict checks the rows against the model card, then one Lua
call (jobs.SUBMIT) writes the job record and pushes the Celery task message, atomically: a job
id the client holds always has a queued message, and no message exists without its record.
GET /jobs/{id} reads the record; GET /dead-letters lists the jobs that failed every attempt.

    uvicorn serving_patterns.asynchronous.proxy:create_app --factory --port 8020
"""

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal, cast

from fastapi import FastAPI, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.settings import ProxySettings
from shared.logs import request_id_var
from shared.model import ModelCard
from shared.pools import LeakWatch
from shared.schemas import Metadata, Prediction, PredictRequest, check_rows
from shared.service import BODY_ERRORS, Slot, create_service

logger = logging.getLogger(__name__)

JOB_ID = "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d"
REQUEST_ID = "0d1c2b3a49586776a5b4c3d2e1f00112"


class JobAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"job_id": JOB_ID, "status": "pending", "request_id": REQUEST_ID}]
        }
    )

    job_id: str
    status: Literal["pending"]
    request_id: str


class JobStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": JOB_ID,
                    "status": "done",
                    "request_id": REQUEST_ID,
                    "attempts": 1,
                    "predictions": [
                        {
                            "label": "setosa",
                            "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0},
                        }
                    ],
                    "model_version": "1.0.0",
                    "error": None,
                    "worker": "worker@worker-1",
                    "submitted_at": 1767225600.0,
                    "started_at": 1767225600.001,
                    "finished_at": 1767225600.002,
                }
            ]
        }
    )

    job_id: str
    status: Literal["pending", "done", "failed"]
    request_id: str
    attempts: int
    predictions: list[Prediction] | None = None
    model_version: str | None = None
    error: str | None = None
    worker: str | None = None
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None


# What GET /jobs/{id} reads of a record (not the task message a pending job's record holds).
JOB_FIELDS = [name for name in JobStatus.model_fields if name != "job_id"]


class DeadLetter(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": JOB_ID,
                    "request_id": REQUEST_ID,
                    "rows": [[1e39, 3.5, 1.4, 0.2]],
                    "error": "ValueError: model gave non-finite probabilities for row 0",
                    "attempts": 3,
                    "failed_at": 1767225600.5,
                }
            ]
        }
    )

    job_id: str
    request_id: str
    rows: list[list[float]]
    error: str
    attempts: int
    failed_at: float


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    model_json = Path(settings.model_dir) / "model.json"
    cards = Slot("model card", model_json, lambda: ModelCard.read(model_json))
    # Requests wait for a pooled connection (up to the timeout) rather than fail while all are
    # busy; the in-flight limit below is where waiting stops and shedding starts.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        # One immediate retry on a broken connection: after a Redis restart the pooled
        # connections are stale, and the retry takes a new one. Not on a timeout (Redis is slow:
        # waiting again doubles the wait). Safe for a submit that Redis ran before the
        # connection broke: jobs.SUBMIT does nothing for a job id it has seen.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(ConnectionError,)),
    )
    redis = Redis.from_pool(pool)
    in_flight = 0  # requests waiting for a pooled connection or holding one
    submit_script = redis.register_script(jobs.SUBMIT)
    leaks = LeakWatch("redis pool", settings.redis_max_connections, settings.leak_grace_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The pool connects lazily, on the first call; its connections are closed here.
        try:
            async with cards.loading():
                yield
        finally:
            await redis.aclose()

    @asynccontextmanager
    async def holding() -> AsyncIterator[None]:
        nonlocal in_flight
        in_flight += 1
        try:
            yield
        finally:
            in_flight -= 1

    async def redis_answers() -> str | None:
        try:
            async with holding():
                await redis.ping()
        except RedisError as exc:
            return f"redis not answering at {settings.redis_url}: {exc}"
        return None

    def redis_pool_sends() -> str | None:
        # Connections the pool counts as in use that no request holds: leaked for good.
        return leaks.check(len(pool._in_use_connections) - in_flight)

    app = create_service(
        "asynchronous-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"model_card": cards.readiness, "redis": redis_answers},
        liveness={"redis pool": redis_pool_sends},
    )
    app.state.redis_pool = pool  # for tests, which put a connection held by nobody in it

    def card() -> ModelCard:
        return cards.require()

    @asynccontextmanager
    async def redis_call() -> AsyncIterator[None]:
        """Around each request's Redis calls: shed past the in-flight limit, 503 on failure."""
        if in_flight >= settings.redis_max_in_flight:
            raise HTTPException(
                503,
                f"busy: {in_flight} Redis calls in flight, try again later",
                headers={"Retry-After": "1"},
            )
        try:
            async with holding():
                yield
        except RedisError as exc:
            logger.warning("redis unavailable: %s", exc)
            raise HTTPException(
                503, f"job store unavailable: {exc}", headers={"Retry-After": "1"}
            ) from None

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        return card().metadata(PredictRequest)

    @app.post(
        "/predict",
        tags=["model"],
        status_code=202,
        response_model=JobAccepted,
        summary="Submit a prediction job; poll GET /jobs/{job_id} for the result",
        responses={
            **BODY_ERRORS,
            422: {"description": "Input does not fit the model, or is not JSON"},
            503: {
                "description": "Queue full, Redis unavailable or busy (too many calls in "
                "flight), or model card not loaded"
            },
        },
    )
    async def predict(body: PredictRequest) -> Response:
        """Queue the rows for prediction and answer at once with the job id (202)."""
        check_rows(body.data, card().feature_names, settings.max_rows)
        job_id, request_id = jobs.new_job_id(), request_id_var.get()
        message = jobs.task_message(settings.queue, job_id, body.data, request_id)
        async with redis_call():
            queued = await submit_script(
                keys=[settings.queue, jobs.job_key(job_id), jobs.PENDING],
                args=[
                    settings.max_queue_length,
                    settings.job_ttl_seconds,
                    message,
                    request_id,
                    time.time(),
                    job_id,
                ],
            )
        if queued < 0:
            raise HTTPException(
                503,
                f"queue full: {settings.max_queue_length} jobs waiting, try again later",
                headers={"Retry-After": "1"},
            )
        answer = JobAccepted(job_id=job_id, status="pending", request_id=request_id)
        # A Response skips FastAPI's second validation of a model we just built.
        return Response(answer.model_dump_json(), status_code=202, media_type="application/json")

    @app.get(
        "/jobs/{job_id}",
        tags=["model"],
        summary="A job: pending, then its predictions, or failed with the reason",
        responses={404: {"description": "No such job (never submitted, or expired)"}},
    )
    async def job(job_id: Annotated[str, PathParam(max_length=64)]) -> JobStatus:
        async with redis_call():
            # bytes: the pool does not decode responses (redis-py's types say bytes | str).
            values = cast(list[bytes | None], await redis.hmget(jobs.job_key(job_id), JOB_FIELDS))
        fields = {k: v.decode() for k, v in zip(JOB_FIELDS, values, strict=True) if v is not None}
        if not fields:
            raise HTTPException(404, f"no job {job_id}: never submitted, or expired")
        predictions = fields.pop("predictions", None)
        return JobStatus.model_validate(
            {**fields, "job_id": job_id, "predictions": predictions and json.loads(predictions)}
        )

    @app.get(
        "/dead-letters",
        tags=["model"],
        summary="Jobs that failed every attempt, newest first",
    )
    async def dead_letters(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DeadLetter]:
        async with redis_call():
            raw = await redis.lrange(jobs.DEAD_LETTERS, -limit, -1)
        return [DeadLetter.model_validate_json(item) for item in reversed(raw)]

    return app
