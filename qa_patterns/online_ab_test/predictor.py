r"""Online A/B test pattern, the model servers: A, the current model, and B, the new one.

Each is a plain REST model server (shared.predict_route.serve_model) that records every
prediction it answers, with its variant's name, into the inference log (shared/inference_log.py:
a Redis stream the recorder writes into the inferences table). Neither knows of the split in
front of it: which requests reach it is the proxy's doing.

    .venv/bin/uvicorn qa_patterns.online_ab_test.predictor:model_a --factory --port 8221
    .venv/bin/uvicorn qa_patterns.online_ab_test.predictor:model_b --factory --port 8222
"""

from fastapi import FastAPI

from qa_patterns.online_ab_test.settings import ModelASettings, ModelBSettings
from shared.inference_log import RecordingSettings
from shared.predict_route import serve_model


def create_app(settings: RecordingSettings) -> FastAPI:
    return serve_model(
        f"online-ab-test-model-{settings.variant}",
        settings,
        description=__doc__ or "",
        record=settings.recording(),
    )


def model_a(settings: ModelASettings | None = None) -> FastAPI:
    return create_app(settings or ModelASettings())


def model_b(settings: ModelBSettings | None = None) -> FastAPI:
    return create_app(settings or ModelBSettings())
