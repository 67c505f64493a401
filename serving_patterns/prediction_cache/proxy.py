"""Prediction cache pattern, the proxy: answers a repeat input from Redis, the rest from the model.

For each POST /predict it hashes the model version and the input (cache.cache_key) and looks the
key up in Redis. A hit is answered at once, without calling the predictor; a miss is predicted
and the answer stored with a TTL. Every answer says which it was: `"cache": "hit"` or `"miss"`.

- The model version is part of the key: the proxy reads the predictor's version from its GET
  /metadata every `version_refresh_seconds` (and from every answer it gets), so once a new
  model is live the old model's answers are never found again; they expire by their TTL.
- Requests for one key that arrive together share one lookup and one prediction (SingleFlight).
- Redis failing is a miss, not an error: the proxy predicts uncached until Redis is back.
- `mode="parallel"` is the catalogue's variant: look up and predict at once, the first answer
  wins. A miss then costs no lookup before the prediction, but the predictor sees every request.

    .venv/bin/uvicorn serving_patterns.prediction_cache.proxy:create_app --factory --port 8070
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from serving_patterns.prediction_cache.cache import (
    PredictionStore,
    SingleFlight,
    cache_key,
    connect,
)
from serving_patterns.prediction_cache.settings import ProxySettings
from shared.http import ServiceClient, read_answer
from shared.logs import request_id_var
from shared.schemas import (
    IRIS_SAMPLE_PREDICTIONS,
    Metadata,
    Prediction,
    PredictRequest,
    PredictResponse,
    check_rows,
)
from shared.service import BODY_ERRORS, create_service

logger = logging.getLogger(__name__)

Cache = Literal["hit", "miss"]


class CachedAnswer(BaseModel):
    """What the cache holds for a key: the model's answer, without the request's id."""

    predictions: list[Prediction]
    model_version: str


class CachedPredictResponse(PredictResponse):
    """The contract's answer, plus where it came from."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": IRIS_SAMPLE_PREDICTIONS,
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "cache": "miss",
                }
            ]
        }
    )

    cache: Cache


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    flights: SingleFlight[tuple[CachedAnswer, Cache]] = SingleFlight()
    model_version: str | None = None  # the predictor's, once it has said
    predictor = ServiceClient.configured("the predictor", str(settings.predictor_url), settings)

    def saw_version(version: str) -> None:
        nonlocal model_version
        if version != model_version:
            logger.info("model version %s (was %s): keys now carry it", version, model_version)
            model_version = version

    async def watch_model_version() -> None:
        # Hits never reach the predictor, so only asking it tells a new model from the old.
        while True:
            try:
                saw_version(
                    read_answer(await predictor.call("GET", "/metadata"), Metadata).model_version
                )
            except HTTPException as exc:  # down or loading: keep the version it last had
                logger.debug("model version not read: %s", exc.detail)
            except Exception:  # whatever it was, this loop must not end: hits would go stale
                logger.exception("model version not read")
            await asyncio.sleep(settings.version_refresh_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(
            settings.redis_url, settings.redis_timeout_seconds, settings.redis_max_connections
        )
        app.state.store = PredictionStore(redis, settings.ttl_seconds, settings.redis_retry_seconds)
        async with predictor:
            watcher = asyncio.create_task(watch_model_version())
            try:
                yield
            finally:
                watcher.cancel()
                await redis.aclose()

    def version_known() -> str | None:
        return None if model_version else "the predictor's model version is not known yet"

    app = create_service(
        "prediction-cache-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        # Redis is not among them: without it the proxy still answers, uncached.
        readiness={"predictor": predictor.readiness, "model version": version_known},
        liveness={"predictor client": predictor.liveness},
    )

    async def predict_and_store(store: PredictionStore, body: PredictRequest) -> CachedAnswer:
        response = await predictor.call("POST", "/predict", body.model_dump_json().encode())
        answer = read_answer(response, PredictResponse)
        saw_version(answer.model_version)
        cached = CachedAnswer(predictions=answer.predictions, model_version=answer.model_version)
        # Under the version that made the answer, whatever the proxy thought was live.
        key = cache_key(settings.key_prefix, answer.model_version, body.data)
        await store.put(key, cached.model_dump_json().encode())
        return cached

    def from_cache(cached: bytes | None) -> CachedAnswer | None:
        if cached is None:
            return None
        try:
            return CachedAnswer.model_validate_json(cached)
        except ValidationError:  # not written by this proxy (or by an older one): a miss
            logger.warning("unreadable cache entry, predicting instead")
            return None

    async def find_answer(
        store: PredictionStore, key: str | None, body: PredictRequest
    ) -> tuple[CachedAnswer, Cache]:
        if key is None:  # until the predictor has said its version, nothing can be looked up
            return await predict_and_store(store, body), "miss"
        if settings.mode == "sequential":
            cached = from_cache(await store.get(key))
            if cached is not None:
                return cached, "hit"
            return await predict_and_store(store, body), "miss"
        # The parallel variant: both at once, and a hit does not wait for the prediction.
        lookup = asyncio.ensure_future(store.get(key))
        prediction = asyncio.ensure_future(predict_and_store(store, body))
        try:
            await asyncio.wait({lookup, prediction}, return_when=asyncio.FIRST_COMPLETED)
            # A prediction that came first wins; one that failed first may still be saved by a hit.
            if not prediction.done() or prediction.exception() is not None:
                cached = from_cache(await lookup)
                if cached is not None:
                    return cached, "hit"
            return await prediction, "miss"
        finally:
            lookup.cancel()  # no-op once done, as in the usual case
            prediction.cancel()

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The predictor gave an answer the proxy cannot use"},
        503: {"description": "The predictor is unreachable, saturated or not ready; retry later"},
        504: {"description": "The predictor did not answer within the timeout"},
    }

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """The predictor's model: name, version, input schema and a sample input."""
        return read_answer(await predictor.call("GET", "/metadata"), Metadata)

    @app.post("/predict", tags=["model"], responses={**BODY_ERRORS, **upstream_errors})
    async def predict(body: PredictRequest, request: Request) -> CachedPredictResponse:
        """Predict the iris species of each row: from the cache when this input was seen."""
        check_rows(body.data, None, settings.max_rows)
        store = request.app.state.store
        key = cache_key(settings.key_prefix, model_version, body.data) if model_version else None
        # Requests for the same key (before the version is known, the same input) share one answer.
        flight = key or cache_key(settings.key_prefix, "", body.data)
        answer, cache = await flights.do(flight, lambda: find_answer(store, key, body))
        return CachedPredictResponse(
            predictions=answer.predictions,
            model_version=answer.model_version,
            request_id=request_id_var.get(),
            cache=cache,
        )

    return app
