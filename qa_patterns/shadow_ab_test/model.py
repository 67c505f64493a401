r"""Shadow A/B test pattern, the model servers: A, the current model, and B, the new one.

Each is a plain REST model server (shared.predict_route.serve_model) that records every
prediction it answers, with its variant's name and the request's id, into the inference log
(shared/inference_log.py: a Redis stream the recorder writes into the inferences table). So the
comparison never depends on the proxy seeing B's answer: B records its own, even when the proxy
has long stopped waiting for it.

Two knobs stand in for a bad B: a delay (a slow model) and a share of requests answered 500 (a
broken one).

    .venv/bin/uvicorn qa_patterns.shadow_ab_test.model:model_a --factory --port 8211
    .venv/bin/uvicorn qa_patterns.shadow_ab_test.model:model_b --factory --port 8212
"""

import json
import random

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from qa_patterns.shadow_ab_test.settings import ModelASettings, ModelBSettings
from shared.predict_route import serve_model


def create_app(settings: ModelASettings) -> FastAPI:
    app = serve_model(
        f"shadow-ab-test-model-{settings.variant}",
        settings,
        delay_ms=round(settings.delay_seconds * 1000),
        description=__doc__ or "",
        record=settings.recording(),
    )
    if settings.fail_percent:
        # Inside the service's own middleware (appended: innermost), so a failed request still
        # has its request id and is counted on /metrics under POST /predict, as a 500.
        predict = next(r for r in app.routes if getattr(r, "path", None) == "/predict")
        app.user_middleware.append(
            Middleware(Failing, percent=settings.fail_percent, route=predict)
        )
    return app


class Failing:
    """Answers `percent` of POST /predict with 500, before the model (a broken model server)."""

    def __init__(self, app: ASGIApp, percent: float, route: BaseRoute) -> None:
        self.app = app
        self.percent = percent
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            if random.uniform(0, 100) < self.percent:
                scope["route"] = self.route  # the metrics' route label, as the router sets it
                body = json.dumps({"detail": "model failure (injected: FAIL_PERCENT)"}).encode()
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def model_a(settings: ModelASettings | None = None) -> FastAPI:
    return create_app(settings or ModelASettings())


def model_b(settings: ModelBSettings | None = None) -> FastAPI:
    return create_app(settings or ModelBSettings())
