r"""Online A/B test pattern, the proxy: it splits the traffic between model A and model B.

Each POST /predict goes to one variant, chosen by split.py from the request's key: its user id
(`X-User-ID`: sticky, a user always sees the same model) or, without one, its request id (a
random split). B gets `b_percent` % of the keys, A the rest; the answer is the model's, with
the variant that served it added (`"variant"` in the body, `X-Variant` in the headers). Each
model server records its own prediction with its variant (shared/inference_log.py), so the
proxy writes nothing: the report joins those records with the client events on request id.

PUT /weights changes B's share from the next request on, with no restart; 0 is the rollback
(everything to A), and GET /ready then no longer needs B. POST /events passes a client's event
(a conversion) on to the events collector, so that a client talks to one address.

nginx/ab.conf.template is the same split in nginx (split_clients, the same hash).

    .venv/bin/uvicorn qa_patterns.online_ab_test.proxy:create_app --factory --port 8220
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict

from qa_patterns.online_ab_test.events import Stored
from qa_patterns.online_ab_test.events_store import ClientEvent
from qa_patterns.online_ab_test.settings import ProxySettings
from qa_patterns.online_ab_test.split import (
    USER_HEADER,
    VARIANT_HEADER,
    Split,
    Variant,
    Weights,
    assign,
)
from shared.http import ServiceClient, opened, read_answer
from shared.logs import request_id_var
from shared.schemas import Metadata, Prediction, PredictRequest, PredictResponse, parse_body
from shared.service import BODY_ERRORS, add_hot_route, create_service

logger = logging.getLogger(__name__)

ROUTED = Counter(
    "online_ab_test_routed_total", "Predictions sent to each variant by the split", ["variant"]
)
B_PERCENT = Gauge("online_ab_test_b_percent", "B's share of the traffic now, in %")


class ABPredictRequest(PredictRequest):
    """The contract's body, documented without an example: the variant of a request without a
    user id is drawn from its random request id, so no example answer holds for every call
    (tests/test_contract.py sends the example and compares; see the README)."""

    model_config = ConfigDict(json_schema_extra={})


class ABPredictResponse(BaseModel):
    """The model's answer, unchanged, and which variant gave it (named before the request id,
    where nginx's sub_filter puts it: the two proxies answer the same bytes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {
                            "label": "setosa",
                            "probabilities": {
                                "setosa": 0.9794,
                                "versicolor": 0.0206,
                                "virginica": 0.0,
                            },
                        }
                    ],
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "variant": "a",
                }
            ]
        }
    )

    predictions: list[Prediction]
    model_version: str
    variant: Variant
    request_id: str


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    b_percent = settings.b_percent  # the one knob PUT /weights turns
    B_PERCENT.set(b_percent)
    # One pooled client per model and one for the events collector, each call under the
    # deadline and carrying the request id.
    models = {
        variant: ServiceClient.configured(f"model {variant.upper()}", str(url), settings)
        for variant, url in (("a", settings.model_a_url), ("b", settings.model_b_url))
    }
    events = ServiceClient.configured("the events collector", str(settings.events_url), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened([*models.values(), events]):
            yield

    async def model_b_ready() -> str | None:
        if b_percent == 0:  # rolled back: B gets nothing, and may be gone
            return None
        return await models["b"].readiness()

    def clients_send() -> str | None:
        reasons = [r for client in [*models.values(), events] if (r := client.liveness())]
        return "; ".join(reasons) or None

    app = create_service(
        "online-ab-test-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"model A": models["a"].readiness, "model B": model_b_ready},
        liveness={"clients": clients_send},
    )

    async def predict(request: Request) -> Response:
        """Predict with model A or B, by the split: sticky by X-User-ID when sent, else random
        (by request id). The answer names the variant."""
        body = await request.body()
        parse_body(body, PredictRequest)  # a model gets well-formed input only
        key = request.headers.get(USER_HEADER) or request_id_var.get()
        variant = assign(key, b_percent)
        ROUTED.labels(variant).inc()
        response = await models[variant].call("POST", "/predict", body)
        answer = read_answer(response, PredictResponse, f"model {variant.upper()}")
        routed = ABPredictResponse(
            predictions=answer.predictions,
            model_version=answer.model_version,
            variant=variant,
            request_id=answer.request_id,
        )
        return Response(
            routed.model_dump_json(),
            media_type="application/json",
            headers={VARIANT_HEADER: variant},
        )

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "The model gave an answer the proxy cannot use"},
        503: {"description": "The model the split chose is unreachable or not ready"},
        504: {"description": "The model did not answer within the timeout"},
    }
    add_hot_route(
        app,
        "/predict",
        predict,
        ABPredictRequest,
        ABPredictResponse,
        "Predict with the variant the split chooses (sticky by X-User-ID)",
        responses={**BODY_ERRORS, **upstream_errors},
    )

    async def record_event(request: Request) -> Response:
        """Pass a client event (what the user did after a prediction) to the events collector."""
        body = await request.body()
        parse_body(body, ClientEvent)
        response = await events.call("POST", "/events", body)
        headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        return Response(
            response.content, response.status_code, headers, media_type="application/json"
        )

    add_hot_route(
        app,
        "/events",
        record_event,
        ClientEvent,
        Stored,
        "Record what a user did after a prediction (passed on to the events collector)",
        responses={**BODY_ERRORS, 503: {"description": "The events collector is unavailable"}},
        tags=["events"],
    )

    @app.get("/weights", tags=["split"])
    async def weights() -> Split:
        """The split now: each variant's share of the traffic, in %."""
        return Split.of(b_percent)

    @app.put("/weights", tags=["split"], responses=BODY_ERRORS)
    async def change_weights(weights: Weights) -> Split:
        """Give B a new share from the next request on, with no restart; 0 is the rollback."""
        nonlocal b_percent
        before, b_percent = b_percent, weights.b_percent
        B_PERCENT.set(b_percent)
        logger.warning("split changed: B's share %s %% -> %s %%", before, b_percent)
        return Split.of(b_percent)

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata(request: Request) -> Metadata:
        """Model A's card (the current model): name, version, input schema and a sample."""
        return read_answer(await models["a"].call("GET", "/metadata"), Metadata, "model A")

    return app
