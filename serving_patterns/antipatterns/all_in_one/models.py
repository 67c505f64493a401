r"""All-in-one, the split design's model servers: one model per service.

Each is the shared contract's model server (shared.predict_route.serve_model) over its own
model directory, in a process of its own: a crash, a restart or a new version of one leaves the
other's process alone.

    .venv/bin/uvicorn serving_patterns.antipatterns.all_in_one.models:create_b --factory \
        --port 8143
"""

from fastapi import FastAPI

from serving_patterns.antipatterns.all_in_one.settings import ASettings, BSettings
from shared.predict_route import serve_model


# One factory per compose service: each reads its own environment prefix.
def create_a(settings: ASettings | None = None) -> FastAPI:
    return serve_model("all-in-one-a", settings or ASettings(), 0, __doc__ or "")


def create_b(settings: BSettings | None = None) -> FastAPI:
    return serve_model("all-in-one-b", settings or BSettings(), 0, __doc__ or "")
