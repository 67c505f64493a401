"""The web single service with POST /predict routed two other ways, for benchmarks.web_single.

Same service, same model, same answers as serving_patterns.web_single.app, whose /predict is a
plain Starlette route in front of FastAPI's (shared.service.add_hot_route); only the way the
request reaches the endpoint differs:

- ordinary: an ordinary `@app.post` route that takes the Request, validates the raw body with
  pydantic in one call (as the pattern does) and returns a Response; the body schema is declared
  through `openapi_extra`;
- pydantic: the idiomatic endpoint, a pydantic body parameter and a returned model.

    uvicorn benchmarks.route_variants:ordinary --factory --http shared.server:Protocol
"""

from typing import Any

from fastapi import FastAPI, Request, Response

from serving_patterns.web_single.settings import Settings
from shared.logs import request_id_var
from shared.model import Predictor, create_model_service
from shared.schemas import PredictRequest, PredictResponse, check_rows, parse_body
from shared.service import BODY_ERRORS, Slot

RESPONSES: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    422: {"description": "Input does not fit the model"},
    503: {"description": "Model not loaded yet"},
}


def _answer(model: Slot[Predictor], settings: Settings, body: PredictRequest) -> PredictResponse:
    predictor = model.require()
    check_rows(body.data, predictor.card.feature_names, settings.max_rows)
    return PredictResponse(
        predictions=predictor.predict(body.data),
        model_version=predictor.card.version,
        request_id=request_id_var.get(),
    )


def ordinary() -> FastAPI:
    settings = Settings()
    app, model = create_model_service("web-single", settings)

    @app.post(
        "/predict",
        tags=["model"],
        response_model=PredictResponse,
        responses=RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> Response:
        answer = _answer(model, settings, parse_body(await request.body(), PredictRequest))
        return Response(answer.model_dump_json(), media_type="application/json")

    return app


def pydantic() -> FastAPI:
    settings = Settings()
    app, model = create_model_service("web-single", settings)

    @app.post("/predict", tags=["model"], responses=RESPONSES)
    async def predict(body: PredictRequest) -> PredictResponse:
        return _answer(model, settings, body)

    return app
