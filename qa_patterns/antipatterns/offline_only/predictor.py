r"""Offline only (antipattern), the model servers: online_ab_test's, with this pattern's settings.
A is the current model (models/iris); B is the candidate (train.py's export). Each records every
prediction it answers with its variant (the inference log), so that the KPI can be computed per
variant; neither knows of the split in front of it.

    .venv/bin/uvicorn qa_patterns.antipatterns.offline_only.predictor:model_a --factory --port 8251
    .venv/bin/uvicorn qa_patterns.antipatterns.offline_only.predictor:model_b --factory --port 8252
"""

from fastapi import FastAPI

from qa_patterns.antipatterns.offline_only.settings import ModelASettings, ModelBSettings
from qa_patterns.online_ab_test.predictor import create_app


def model_a(settings: ModelASettings | None = None) -> FastAPI:
    return create_app(settings or ModelASettings())


def model_b(settings: ModelBSettings | None = None) -> FastAPI:
    return create_app(settings or ModelBSettings())
