r"""Prediction circuit break pattern, the prediction server: a plain REST model server on the iris
model, which knows nothing of the limit in front of it.

Its own request counter (GET /metrics, http_requests_total for POST /predict) is what shows how
many requests reached it, and its one knob, an artificial delay, makes predictions overlap, so
that the limit on how many run at once shows.

    .venv/bin/uvicorn serving_patterns.prediction_circuit_break.predictor:create_app \
        --factory --port 8091
"""

from fastapi import FastAPI

from serving_patterns.prediction_circuit_break.settings import PredictorSettings
from shared.predict_route import serve_model


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    delay_ms = round(settings.delay_seconds * 1000)
    return serve_model("prediction-circuit-break-predictor", settings, delay_ms, __doc__ or "")
