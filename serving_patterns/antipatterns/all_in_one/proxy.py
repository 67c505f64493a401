r"""All-in-one, the fix: a proxy in front of one service per model.

The same paths as the monolith's (POST /a/predict, POST /b/predict), each forwarded to its
model's own service through a pooled shared.http.ServiceClient (one deadline a call, the request
id passed on). A model's service down, restarting or slow is that model's 503 or 504; the other
model's calls never touch it.

    .venv/bin/uvicorn serving_patterns.antipatterns.all_in_one.proxy:create_app --factory \
        --port 8141
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from pydantic import ConfigDict

from serving_patterns.antipatterns.all_in_one.settings import ProxySettings
from shared.http import ServiceClient, opened, read_answer
from shared.logs import request_id_var
from shared.schemas import PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS, create_service

# A handwritten 7 (8x8 intensities 0..16) and model B's answer: /docs shows each model its own
# example (the contract's default is an iris row, which B would refuse).
SEVEN = [0, 0, 7, 8, 13, 16, 15, 1, 0, 0, 7, 7, 4, 11, 12, 0, 0, 0, 0, 0, 8, 13, 1, 0, 0, 4, 8,
         8, 15, 15, 6, 0, 0, 2, 11, 15, 15, 4, 0, 0, 0, 0, 0, 16, 5, 0, 0, 0, 0, 0, 9, 15, 1, 0,
         0, 0, 0, 0, 13, 5, 0, 0, 0, 0]  # fmt: skip
SEVEN_PROBABILITIES: Any = {
    "0": 3.6061258867903234e-08, "1": 6.562876933458028e-06, "2": 1.6672427591402084e-05,
    "3": 2.304421514054411e-06, "4": 8.656296267872676e-05, "5": 0.00046765245497226715,
    "6": 1.2054411513418017e-07, "7": 0.9992750287055969, "8": 1.1849499060190283e-05,
    "9": 0.00013323746679816395,
}  # fmt: skip


ROWS: Any = [SEVEN]  # JSON, as far as the schema's examples go


class DigitsRequest(PredictRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [{"data": ROWS}]})


class DigitsResponse(PredictResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [{"label": "7", "probabilities": SEVEN_PROBABILITIES}],
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                }
            ]
        }
    )


UPSTREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"description": "The model's service gave an answer the proxy cannot use"},
    503: {"description": "The model's service is unreachable, saturated or not ready"},
    504: {"description": "The model's service did not answer within the timeout"},
}


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    models = {
        "a": ServiceClient.configured("model a", str(settings.a_url), settings),
        "b": ServiceClient.configured("model b", str(settings.b_url), settings),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened(models.values()):
            yield

    # Ready while either model is: one model's outage is not the other's.
    async def any_model_ready() -> str | None:
        reasons = [await client.readiness() for client in models.values()]
        return None if None in reasons else "; ".join(r for r in reasons if r)

    app = create_service(
        "all-in-one-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"models": any_model_ready},
        liveness={f"model {name} client": client.liveness for name, client in models.items()},
    )

    async def forward(name: str, body: PredictRequest) -> PredictResponse:
        check_rows(body.data, None, settings.max_rows)
        response = await models[name].call("POST", "/predict", body.model_dump_json().encode())
        answer = read_answer(response, PredictResponse, f"model {name}")
        return answer.model_copy(update={"request_id": request_id_var.get()})

    @app.post("/a/predict", tags=["model"], responses={**BODY_ERRORS, **UPSTREAM_ERRORS})
    async def predict_a(body: PredictRequest, request: Request) -> PredictResponse:
        """Model A (iris): its own service's answer."""
        return await forward("a", body)

    @app.post("/b/predict", tags=["model"], responses={**BODY_ERRORS, **UPSTREAM_ERRORS})
    async def predict_b(body: DigitsRequest, request: Request) -> DigitsResponse:
        """Model B (digits): its own service's answer."""
        return DigitsResponse.model_validate((await forward("b", body)).model_dump())

    return app
