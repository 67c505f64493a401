"""Data cache pattern, the prediction server: a plain REST model server on the iris model.

It knows nothing of records or the cache: it gets a preprocessed row for every request, hit or
miss. Its own request counter (GET /metrics, http_requests_total for POST /predict) shows that
a cached record still reaches it.

    .venv/bin/uvicorn serving_patterns.data_cache.predictor:create_app --factory --port 8081
"""

from fastapi import FastAPI

from serving_patterns.data_cache.settings import PredictorSettings
from shared.predict_route import serve_model


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    delay_ms = round(settings.delay_seconds * 1000)
    return serve_model("data-cache-predictor", settings, delay_ms, __doc__ or "")
