"""Prediction cache pattern, the prediction server: a plain REST model server on the iris model.

It knows nothing of the cache in front of it. Its own request counter (GET /metrics,
http_requests_total for POST /predict) is what shows that a hit never reaches it, and its one
knob, an artificial delay, stands in for a slow model, so the time a hit saves can be seen.

    .venv/bin/uvicorn serving_patterns.prediction_cache.predictor:create_app --factory --port 8071
"""

from fastapi import FastAPI

from serving_patterns.prediction_cache.settings import PredictorSettings
from shared.predict_route import serve_model


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    delay_ms = round(settings.delay_seconds * 1000)
    return serve_model("prediction-cache-predictor", settings, delay_ms, __doc__ or "")
