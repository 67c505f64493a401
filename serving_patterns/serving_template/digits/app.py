"""The digits model service: the fleet's contract over the model in models/digits.

Everything a service of the fleet answers (/predict, /metadata, /health, /ready, /metrics, the
Open Inference Protocol's /v2, micro-batching) comes from shared.predict_route.serve_model; the
model's card (model.json) gives its features, labels and sample input.
"""

from fastapi import FastAPI

from shared.predict_route import serve_model

from .settings import Settings

NAME = "digits"
DESCRIPTION = "Handwritten digits from the 24 principal components of an 8x8 image."


def create_app(settings: Settings | None = None) -> FastAPI:
    app = serve_model(NAME, settings or Settings(), description=DESCRIPTION)
    return app
