"""Microservice vertical, the stages: one model server each, the same code over different models.

Stage 1 (coarse) tells which half of the digits an 8x8 image shows; stage 2 is the specialist for
that half (low: 0-4, high: 5-9), whose input is the image followed by stage 1's probabilities.
Each is the shared contract's model server (shared.predict_route.serve_model) over its own model
directory, with an optional injected delay; the proxy decides who runs and in what order.

    .venv/bin/uvicorn serving_patterns.microservice_vertical.stages:create_low --factory --port 8052
"""

from fastapi import FastAPI

from serving_patterns.microservice_vertical.settings import (
    CoarseSettings,
    HighSettings,
    LowSettings,
)
from shared.predict_route import serve_model


def create_app(settings: CoarseSettings | LowSettings | HighSettings, stage: str) -> FastAPI:
    return serve_model(f"microservice-vertical-{stage}", settings, settings.delay_ms, __doc__ or "")


# One factory per compose service: each reads its own environment prefix.
def create_coarse(settings: CoarseSettings | None = None) -> FastAPI:
    return create_app(settings or CoarseSettings(), "coarse")


def create_low(settings: LowSettings | None = None) -> FastAPI:
    return create_app(settings or LowSettings(), "low")


def create_high(settings: HighSettings | None = None) -> FastAPI:
    return create_app(settings or HighSettings(), "high")
