r"""Microservice horizontal, the proxy: one request fans out to every model at once.

Each request goes to every backend in BACKENDS concurrently, each call under its own deadline,
so the request costs about the slowest model, not the sum. The answer has each model's own
answer under `models` (its predictions, or why it has none: `timeout` or `error`) and, as the
contract's `predictions`, their aggregate: the mean of the class probabilities of the models
that answered (soft voting), its label the most probable class.

A late or failing model never fails the request while another answered: it is marked, and the
aggregate is over the others. Only when none answered is the request an error: 504 when every
model that could have answered was too late, 503 when none was reachable or ready, the models'
own 422 when the input fits none of them, 502 otherwise.

    .venv/bin/uvicorn serving_patterns.microservice_horizontal.proxy:create_app --factory \
        --port 8060
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from serving_patterns.microservice_horizontal.settings import ProxySettings
from shared.http import RETRY_AFTER, ServiceClient, opened, read_answer
from shared.logs import request_id_var
from shared.schemas import Metadata, Prediction, PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS, create_service

AGGREGATE = "mean_probability"


# The fan-out's answer to PredictRequest's example (the /docs example; tests/test_contract.py
# sends it).
EXAMPLE_ANSWER: dict[str, Any] = {
    "predictions": [
        {
            "label": "setosa",
            "probabilities": {
                "setosa": 0.987118661403656,
                "versicolor": 0.011853385445040962,
                "virginica": 0.001028145042558511,
            },
        },
        {
            "label": "virginica",
            "probabilities": {
                "setosa": 0.0039730687567498535,
                "versicolor": 0.012586136814206839,
                "virginica": 0.9834409157435099,
            },
        },
    ],
    "model_version": "forest:1.0.0,svm:1.0.0,mlp:1.0.0",
    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
    "aggregate": "mean_probability",
    "models": {
        "forest": {
            "status": "ok",
            "model_version": "1.0.0",
            "predictions": [
                {
                    "label": "setosa",
                    "probabilities": {
                        "setosa": 1.0000003576278687,
                        "versicolor": 0.0,
                        "virginica": 0.0,
                    },
                },
                {
                    "label": "virginica",
                    "probabilities": {
                        "setosa": 0.0,
                        "versicolor": 0.0,
                        "virginica": 1.0000003576278687,
                    },
                },
            ],
            "took": "0.008724s",
        },
        "svm": {
            "status": "ok",
            "model_version": "1.0.0",
            "predictions": [
                {
                    "label": "setosa",
                    "probabilities": {
                        "setosa": 0.9645578861236572,
                        "versicolor": 0.03423362597823143,
                        "virginica": 0.0012085778871551156,
                    },
                },
                {
                    "label": "virginica",
                    "probabilities": {
                        "setosa": 0.01148582249879837,
                        "versicolor": 0.034462783485651016,
                        "virginica": 0.9540513753890991,
                    },
                },
            ],
            "took": "0.006104s",
        },
        "mlp": {
            "status": "ok",
            "model_version": "1.0.0",
            "predictions": [
                {
                    "label": "setosa",
                    "probabilities": {
                        "setosa": 0.9967977404594421,
                        "versicolor": 0.0013265303568914533,
                        "virginica": 0.0018758572405204177,
                    },
                },
                {
                    "label": "virginica",
                    "probabilities": {
                        "setosa": 0.0004333837714511901,
                        "versicolor": 0.0032956269569694996,
                        "virginica": 0.996271014213562,
                    },
                },
            ],
            "took": "0.007396s",
        },
    },
    "took": "0.008944s",
}


class ModelAnswer(BaseModel):
    status: Literal["ok", "timeout", "error"]
    model_version: str | None = Field(None, description="The model's, when it answered")
    predictions: list[Prediction] | None = Field(None, description="The model's, when it answered")
    detail: str | None = Field(None, description="Why there is no answer: timeout or error")
    took: str = Field(description="How long the model's call took: '0.004827s'")


class FanOutResponse(PredictResponse):
    """The aggregate as the contract's fields, and every model's own answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ANSWER]})

    aggregate: Literal["mean_probability"] = Field(
        "mean_probability",
        description="How `predictions` is made: per row, the mean of the class probabilities of "
        "the models whose status is ok; the label is the most probable class",
    )
    models: dict[str, ModelAnswer] = Field(description="Per backend, in BACKENDS order")
    took: str = Field(description="The whole fan-out, from request to answer: '0.015968s'")


def duration(seconds: float) -> str:
    """A time as the answer shows it: '0.004827s'. Text, not a number, so that an answer is the
    same for the same input whatever the timing (the /docs example and the README compare)."""
    return f"{seconds:.6f}s"


def mean_probability(answers: list[list[Prediction]]) -> list[Prediction]:
    """Per row, the mean of every answer's class probabilities, labelled with the best class."""
    aggregate = []
    for row in zip(*answers, strict=True):
        labels = list(dict.fromkeys(label for p in row for label in p.probabilities))
        mean = {
            label: sum(p.probabilities.get(label, 0.0) for p in row) / len(row) for label in labels
        }
        aggregate.append(Prediction(label=max(mean, key=mean.__getitem__), probabilities=mean))
    return aggregate


def no_answer(
    answers: Mapping[str, ModelAnswer], failures: Mapping[str, HTTPException]
) -> HTTPException:
    """The error for a request no model answered, from what each model's call ended with."""
    statuses = {exc.status_code for exc in failures.values()}
    reasons = "; ".join(str(answers[name].detail) for name in failures)
    refused = [exc for exc in failures.values() if exc.status_code in (413, 422)]
    if refused:  # the same input went to every model: one that refused it says why
        return HTTPException(refused[0].status_code, refused[0].detail)
    if statuses == {503}:
        return HTTPException(503, f"no model is available: {reasons}", RETRY_AFTER)
    if 504 in statuses:  # one would have answered, given more time
        return HTTPException(504, f"no model answered in time: {reasons}")
    return HTTPException(502, f"no model answered: {reasons}")


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()

    # One pooled client per model, each call under the per-model deadline and carrying the
    # request id.
    models = {
        name: ServiceClient(
            f"the {name} model",
            url,
            settings.model_timeout_seconds,
            settings.max_connections,
            settings.max_in_flight,
            settings.leak_grace_seconds,
        )
        for name, url in settings.backends.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened(models.values()):
            yield

    # Ready while any model is: the proxy answers with the ones that do.
    async def some_model_ready() -> str | None:
        reasons = await asyncio.gather(*(client.readiness() for client in models.values()))
        return None if None in reasons else "; ".join(r for r in reasons if r)

    def clients_send() -> str | None:
        reasons = [r for client in models.values() if (r := client.liveness())]
        return "; ".join(reasons) or None

    app = create_service(
        "microservice-horizontal-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"models": some_model_ready},
        liveness={"model clients": clients_send},
    )

    async def ask(
        name: str, body: bytes, rows: int, failures: dict[str, HTTPException]
    ) -> ModelAnswer:
        """One model's answer, or what became of its call (recorded in `failures`): never raises."""
        client = models[name]
        started = time.perf_counter()
        try:
            answer = read_answer(
                await client.call("POST", "/predict", body), PredictResponse, client.name
            )
            if len(answer.predictions) != rows:
                raise HTTPException(502, f"{client.name}'s answer does not fit the contract")
        except HTTPException as exc:
            failures[name] = exc
            return ModelAnswer(
                status="timeout" if exc.status_code == 504 else "error",
                detail=exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail),
                took=duration(time.perf_counter() - started),
            )
        return ModelAnswer(
            status="ok",
            model_version=answer.model_version,
            predictions=answer.predictions,
            took=duration(time.perf_counter() - started),
        )

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "No model answered, and not for want of time or availability"},
        503: {"description": "No model is reachable or ready; retry later"},
        504: {"description": "Every model missed its deadline"},
    }

    # A model's answer shows only what it has: predictions, or the reason it has none.
    @app.post(
        "/predict",
        tags=["model"],
        responses={**BODY_ERRORS, **upstream_errors},
        response_model_exclude_none=True,
    )
    async def predict(body: PredictRequest) -> FanOutResponse:
        """Ask every model at once about each row of iris measurements (cm); answer with each
        model's answer and their mean probability."""
        arrived = time.perf_counter()
        check_rows(body.data, None, settings.max_rows)
        payload = body.model_dump_json().encode()
        failures: dict[str, HTTPException] = {}
        # The fan-out: every call starts now, and the slowest (or its deadline) ends the wait.
        names = list(models)
        answers = dict(
            zip(
                names,
                await asyncio.gather(*(ask(n, payload, len(body.data), failures) for n in names)),
                strict=True,
            )
        )
        answered = {name: a for name, a in answers.items() if a.predictions is not None}
        if not answered:
            raise no_answer(answers, failures)
        return FanOutResponse(
            predictions=mean_probability(
                [a.predictions for a in answered.values() if a.predictions]
            ),
            model_version=",".join(f"{name}:{a.model_version}" for name, a in answered.items()),
            request_id=request_id_var.get(),
            models=answers,
            took=duration(time.perf_counter() - arrived),
        )

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata() -> Metadata:
        """The ensemble: the input the models share, and each model's name."""
        cards: dict[str, Metadata] = {}
        for name, client in models.items():
            try:
                cards[name] = read_answer(
                    await client.call("GET", "/metadata"), Metadata, client.name
                )
            except HTTPException:
                continue  # described by the models that answer, as /predict answers
        if not cards:
            raise HTTPException(503, "no model answered for its metadata", RETRY_AFTER)
        first = next(iter(cards.values()))
        return Metadata(
            model_name="iris-ensemble",
            model_version=",".join(f"{name}:{card.model_version}" for name, card in cards.items()),
            feature_names=first.feature_names,
            labels=first.labels,
            input_schema=PredictRequest.model_json_schema(),
            sample_input=first.sample_input,
            extra={"aggregate": AGGREGATE, "models": {n: c.model_name for n, c in cards.items()}},
        )

    return app
