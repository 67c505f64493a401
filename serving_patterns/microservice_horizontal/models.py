r"""Microservice horizontal, the model servers: one model each, the same code over different models.

A random forest, a support vector machine and a small neural network, each trained on iris
(shared/training.py) and served by the shared contract's model server
(shared.predict_route.serve_model) with an optional injected delay. They know nothing of each
other or of the proxy: any server answering the contract's POST /predict can join the fan-out.

    .venv/bin/uvicorn serving_patterns.microservice_horizontal.models:create_svm --factory \
        --port 8062
"""

from fastapi import FastAPI

from serving_patterns.microservice_horizontal.settings import (
    ForestSettings,
    MlpSettings,
    SvmSettings,
)
from shared.predict_route import serve_model


def create_app(settings: ForestSettings | SvmSettings | MlpSettings, model: str) -> FastAPI:
    return serve_model(
        f"microservice-horizontal-{model}", settings, settings.delay_ms, __doc__ or ""
    )


# One factory per compose service: each reads its own environment prefix.
def create_forest(settings: ForestSettings | None = None) -> FastAPI:
    return create_app(settings or ForestSettings(), "forest")


def create_svm(settings: SvmSettings | None = None) -> FastAPI:
    return create_app(settings or SvmSettings(), "svm")


def create_mlp(settings: MlpSettings | None = None) -> FastAPI:
    return create_app(settings or MlpSettings(), "mlp")
