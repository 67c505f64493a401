"""Data cache pattern, the proxy: predicts for a record named by its id, with the record's
preprocessed row from Redis when it is there and from the database when it is not.

POST /predict {"id": 7}:
1. look the id up in Redis (cache.py): a hit is the record's preprocessed row and its revision;
2. on a miss, read the record from the database (records.py) and preprocess it
   (preprocessing.py), in a thread; store the row in Redis for the next request;
3. either way, call the predictor with the row: the cache holds the input, not the prediction,
   so the model runs every time (the difference from the prediction cache, 1.8).

The records API is here too, because the cache must hear of every change: POST /records adds a
record (the warmer puts it in the cache within a poll), PUT /records/{id} changes one and
invalidates its entry before it answers, so the next read sees the new values.

Redis failing is a miss: the record is read from the database, never an error. The database
failing is a 503 naming it, except for records Redis still holds, which are still answered.

    .venv/bin/uvicorn serving_patterns.data_cache.proxy:create_app --factory --port 8080
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, Strict
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from serving_patterns.data_cache import records
from serving_patterns.data_cache.cache import Entry, RecordCache, RedisOutage
from serving_patterns.data_cache.preprocessing import preprocess
from serving_patterns.data_cache.records import MAX_ID, Record, RecordFields
from serving_patterns.data_cache.settings import ProxySettings
from shared.http import RETRY_AFTER, ServiceClient, read_answer
from shared.logs import request_id_var
from shared.redis_client import connect
from shared.schemas import Metadata, PredictResponse
from shared.service import BODY_ERRORS, create_service

logger = logging.getLogger(__name__)

DATABASE_READS = Counter(
    "data_cache_database_reads_total", "Records read from the database to answer a prediction"
)
LOOKUPS = Counter(
    "data_cache_lookups_total",
    "Cache lookups by outcome: hit, miss, or unavailable (Redis failed or is being skipped)",
    ["outcome"],
)

T = TypeVar("T")
Cache = Literal["hit", "miss"]
RecordId = Annotated[int, Strict(), Field(ge=1, le=MAX_ID, description="A record's id")]


class PredictByIdRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": 1}]})

    id: RecordId


class RecordPrediction(PredictResponse):
    """The contract's answer for the record's row, plus which record, which revision of it, and
    whether its row came from the cache."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {
                            "label": "setosa",
                            "probabilities": {
                                "setosa": 0.9719300866127014,
                                "versicolor": 0.02806892618536949,
                                "virginica": 9.862814067673753e-07,
                            },
                        }
                    ],
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "record_id": 1,
                    "revision": 1,
                    "cache": "hit",
                }
            ]
        }
    )

    record_id: int
    revision: int
    cache: Cache


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    engine = records.connect(
        settings.database_url, settings.database_timeout_seconds, settings.database_pool_size
    )
    outage = RedisOutage(settings.redis_retry_seconds)
    predictor = ServiceClient.configured("the predictor", str(settings.predictor_url), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(
            settings.redis_url, settings.redis_timeout_seconds, settings.redis_max_connections
        )
        app.state.cache = RecordCache(redis, settings.key_prefix, settings.ttl_seconds)
        async with predictor:
            try:
                yield
            finally:
                await redis.aclose()
                engine.dispose()

    app = create_service(
        "data-cache-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        # Neither Redis (without it records come from the database) nor the database (without
        # it cached records are still answered): taking the proxy out of rotation for either
        # would fail requests it can serve.
        readiness={"predictor": predictor.readiness},
        liveness={"predictor client": predictor.liveness},
    )

    @app.exception_handler(SQLAlchemyError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database failed: %r", exc)
        return JSONResponse(
            {"detail": f"the database is unavailable ({type(exc).__name__})"},
            status_code=503,
            headers=RETRY_AFTER,
        )

    async def cached(call: Callable[[], Awaitable[T]], otherwise: T) -> T:
        """`call` on Redis, or `otherwise` when Redis fails or is being skipped after a failure."""
        if outage.skipping():
            return otherwise
        try:
            result = await call()
        except RedisError as exc:
            outage.failed(exc)
            return otherwise
        outage.answered()
        return result

    def from_database(record_id: int) -> Entry | None:
        """The record's row, read and preprocessed (blocking: run in a thread)."""
        record = records.read(engine, record_id)
        DATABASE_READS.inc()
        if record is None:
            return None
        return Entry(record.revision, preprocess(record, settings.preprocess_delay_seconds))

    async def row_of(cache: RecordCache, record_id: int) -> tuple[Entry, Cache]:
        entry = await cached(lambda: cache.get(record_id), None)
        LOOKUPS.labels(
            "unavailable" if outage.failing else "miss" if entry is None else "hit"
        ).inc()
        if entry is not None:
            return entry, "hit"
        entry = await asyncio.to_thread(from_database, record_id)
        if entry is None:
            raise HTTPException(404, f"no record with id {record_id}")
        # Refused (and harmless) when the record changed since it was read: see cache.py.
        await cached(lambda: cache.fill(record_id, entry.revision, entry.features), False)
        return entry, "miss"

    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "No record with this id"}}
    database_errors: dict[int | str, dict[str, Any]] = {
        503: {"description": "The database (or, for /predict, the predictor) is unavailable"},
    }
    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The predictor gave an answer the proxy cannot use"},
        503: {"description": "The database or the predictor is unavailable; retry later"},
        504: {"description": "The predictor did not answer within the timeout"},
    }

    @app.post("/predict", tags=["model"], responses={**BODY_ERRORS, **not_found, **upstream_errors})
    async def predict(body: PredictByIdRequest, request: Request) -> RecordPrediction:
        """Predict the iris species of a stored record, named by its id."""
        entry, cache = await row_of(request.app.state.cache, body.id)
        content = json.dumps({"data": [entry.features]}).encode()
        answer = read_answer(await predictor.call("POST", "/predict", content), PredictResponse)
        return RecordPrediction(
            predictions=answer.predictions,
            model_version=answer.model_version,
            request_id=request_id_var.get(),
            record_id=body.id,
            revision=entry.revision,
            cache=cache,
        )

    @app.post(
        "/records",
        tags=["records"],
        status_code=status.HTTP_201_CREATED,
        responses={**BODY_ERRORS, **database_errors},
    )
    async def add_record(body: RecordFields) -> Record:
        """Store a new record; the warmer preprocesses it into the cache before it is asked for."""
        (record,) = await asyncio.to_thread(records.add, engine, [body])
        return record

    @app.put(
        "/records/{record_id}",
        tags=["records"],
        responses={**BODY_ERRORS, **not_found, **database_errors},
    )
    async def change_record(
        record_id: Annotated[int, Path(ge=1, le=MAX_ID)], body: RecordFields, request: Request
    ) -> Record:
        """Change a record's measurements; its cached row is invalidated before this answers."""
        record = await asyncio.to_thread(records.change, engine, record_id, body)
        if record is None:
            raise HTTPException(404, f"no record with id {record_id}")
        cache = request.app.state.cache
        told: bool | None = await cached(lambda: cache.invalidate(record_id, record.revision), None)
        if told is None:  # the database has the change; the cache may hold the old row
            logger.warning(
                "record %d changed but Redis is unavailable: its cached row, if Redis kept one, "
                "is stale until the warmer rewrites it or its TTL ends",
                record_id,
            )
        return record

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """The predictor's model: name, version, input schema and a sample input."""
        return read_answer(await predictor.call("GET", "/metadata"), Metadata)

    return app
