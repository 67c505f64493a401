"""Microservice vertical, the proxy: it drives a chain of model services, one after another.

Stage 1, the coarse model, says which half of the digits each 8x8 image shows (0-4 or 5-9).
That answer chooses stage 2, the specialist for the half, and is part of its input: a
specialist takes the image's 64 pixels followed by stage 1's probabilities, as it was trained.
The answer is the specialists' predictions in the request's row order, with every stage's
result, when it started and how long it took: the chain costs about the sum of its stages.

A stage that fails stops the chain, and the error names it: 504 when it does not answer within
its deadline, 503 (with Retry-After) when it is down or not ready, 502 when it answers
something the chain cannot use. Input that the first stage refuses is the caller's 422.

    .venv/bin/uvicorn serving_patterns.microservice_vertical.proxy:create_app --factory --port 8050
"""

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx2
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from serving_patterns.microservice_vertical.settings import ProxySettings
from shared.http import ServiceClient, opened, read_answer
from shared.logs import request_id_var
from shared.schemas import Metadata, Prediction, PredictRequest, PredictResponse, check_rows
from shared.service import BODY_ERRORS, create_service

# The routing of the chain: which specialist runs next, by stage 1's label. Its order is the
# order of the probabilities appended to a specialist's input (shared/training.py's COARSE_LABELS).
SPECIALIST_FOR = {"0-4": "low", "5-9": "high"}

THREE = [0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0, 0, 0, 2]
THREE += [15, 11, 1, 0, 0, 0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0, 0, 0, 8, 4, 5, 14]
THREE += [9, 0, 0, 0, 7, 13, 13, 9, 0, 0]
SEVEN = [0, 0, 7, 8, 13, 16, 15, 1, 0, 0, 7, 7, 4, 11, 12, 0, 0, 0, 0, 0, 8, 13, 1, 0, 0, 4, 8]
SEVEN += [8, 15, 15, 6, 0, 0, 2, 11, 15, 15, 4, 0, 0, 0, 0, 0, 16, 5, 0, 0, 0, 0, 0, 9, 15, 1, 0]
SEVEN += [0, 0, 0, 0, 13, 5, 0, 0, 0, 0]


class DigitsRequest(PredictRequest):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"data": cast("JsonValue", [THREE, SEVEN])}]},
    )


# The chain's answer to DigitsRequest's example (the /docs example; tests/test_contract.py
# sends it).
EXAMPLE_ANSWER: dict[str, Any] = {
    "predictions": [
        {
            "label": "3",
            "probabilities": {
                "0": 0.00014365435345098376,
                "1": 0.0007631081389263272,
                "2": 0.0008251284598372877,
                "3": 0.9982241988182068,
                "4": 4.390592221170664e-05,
            },
        },
        {
            "label": "7",
            "probabilities": {
                "5": 2.1660915081156418e-05,
                "6": 6.210559035935148e-07,
                "7": 0.9992589354515076,
                "8": 6.727651634719223e-05,
                "9": 0.0006514662527479231,
            },
        },
    ],
    "model_version": "coarse:1.0.0,low:1.0.0,high:1.0.0",
    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
    "stages": [
        {
            "stage": "coarse",
            "model_version": "1.0.0",
            "rows": [0, 1],
            "predictions": [
                {
                    "label": "0-4",
                    "probabilities": {"0-4": 0.7848531007766724, "5-9": 0.21514691412448883},
                },
                {
                    "label": "5-9",
                    "probabilities": {"0-4": 0.012374043464660645, "5-9": 0.9876259565353394},
                },
            ],
            "started": "0.000006s",
            "took": "0.003664s",
        },
        {
            "stage": "low",
            "model_version": "1.0.0",
            "rows": [0],
            "predictions": [
                {
                    "label": "3",
                    "probabilities": {
                        "0": 0.00014365435345098376,
                        "1": 0.0007631081389263272,
                        "2": 0.0008251284598372877,
                        "3": 0.9982241988182068,
                        "4": 4.390592221170664e-05,
                    },
                }
            ],
            "started": "0.003711s",
            "took": "0.003308s",
        },
        {
            "stage": "high",
            "model_version": "1.0.0",
            "rows": [1],
            "predictions": [
                {
                    "label": "7",
                    "probabilities": {
                        "5": 2.1660915081156418e-05,
                        "6": 6.210559035935148e-07,
                        "7": 0.9992589354515076,
                        "8": 6.727651634719223e-05,
                        "9": 0.0006514662527479231,
                    },
                }
            ],
            "started": "0.007051s",
            "took": "0.003183s",
        },
    ],
    "took": "0.010262s",
}


class StageResult(BaseModel):
    stage: str = Field(description="coarse, low or high")
    model_version: str
    rows: list[int] = Field(description="The request's rows (0-based) this stage scored")
    predictions: list[Prediction] = Field(description="One per row in `rows`, in that order")
    started: str = Field(description="When the call began, after the request arrived: '0.006237s'")
    took: str = Field(description="How long the stage's call took: '0.004827s'")


class ChainResponse(PredictResponse):
    """The specialists' predictions (the contract's fields), and every stage that ran."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_ANSWER]})

    stages: list[StageResult] = Field(description="In the order they ran")
    took: str = Field(description="The whole chain, from request to answer: '0.015968s'")


def duration(seconds: float) -> str:
    """A time as the answer shows it: '0.004827s'. Text, not a number, so that an answer is the
    same for the same input whatever the timing (the /docs example and the README compare)."""
    return f"{seconds:.6f}s"


def specialist_input(row: Sequence[float], coarse: Prediction) -> list[float]:
    """What a specialist takes: the image, then stage 1's probabilities in SPECIALIST_FOR order."""
    return [*row, *(coarse.probabilities[label] for label in SPECIALIST_FOR)]


def route(coarse: Sequence[Prediction]) -> dict[str, list[int]]:
    """The rows each specialist must score, by stage 1's answer (the 502 when it has none)."""
    routed: dict[str, list[int]] = {}
    for row, prediction in enumerate(coarse):
        if prediction.probabilities.keys() != SPECIALIST_FOR.keys():
            raise HTTPException(
                502,
                f"the coarse stage answered the labels {sorted(prediction.probabilities)}, "
                f"not the chain's {sorted(SPECIALIST_FOR)}",
            )
        routed.setdefault(SPECIALIST_FOR[prediction.label], []).append(row)
    return routed


def read_stage(stage: str, response: httpx2.Response, rows: list[int]) -> PredictResponse:
    """A stage's answer for `rows`, or the HTTPException naming the stage and what went wrong."""
    try:
        answer = read_answer(response, PredictResponse, f"the {stage} stage")
    except HTTPException as exc:
        if exc.status_code in (413, 422):
            # Input a model refuses is the caller's to fix (wrong width, values it cannot
            # score); the stage numbered the rows it was sent, the caller knows the request's.
            exc.detail = renumber(exc.detail, rows)
        raise
    if len(answer.predictions) != len(rows):  # the chain would lose rows, or invent them
        raise HTTPException(502, f"the {stage} stage's answer does not fit the contract")
    return answer


def renumber(problem: Any, rows: list[int]) -> Any:
    """FastAPI's error list with each ["body", "data", i, ...] pointing at the request's row."""
    if not isinstance(problem, list):
        return problem
    errors = []
    for error in problem:
        loc = error.get("loc") if isinstance(error, dict) else None
        if isinstance(loc, list) and loc[:2] == ["body", "data"] and len(loc) > 2:
            if isinstance(loc[2], int) and 0 <= loc[2] < len(rows):
                error = {**error, "loc": [*loc[:2], rows[loc[2]], *loc[3:]]}
        errors.append(error)
    return errors


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    settings = settings or ProxySettings()
    urls = {"coarse": settings.coarse_url, "low": settings.low_url, "high": settings.high_url}

    # One pooled client per stage, each call under the stage's deadline and carrying the
    # request id.
    stages = {
        stage: ServiceClient(
            f"the {stage} stage",
            url,
            settings.stage_timeout_seconds,
            settings.max_connections,
            settings.max_in_flight,
            settings.leak_grace_seconds,
        )
        for stage, url in urls.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with opened(stages.values()):
            yield

    app = create_service(
        "microservice-vertical-proxy",
        settings,
        lifespan,
        description=__doc__ or "",
        # A chain with a missing link cannot answer every request: out of rotation until back.
        readiness={stage: client.readiness for stage, client in stages.items()},
        liveness={f"{stage} client": client.liveness for stage, client in stages.items()},
    )

    async def run_stage(
        stage: str, rows: list[int], data: list[list[float]], arrived: float
    ) -> StageResult:
        started = time.perf_counter()
        body = json.dumps({"data": data}).encode()
        response = await stages[stage].call("POST", "/predict", body)
        answer = read_stage(stage, response, rows)
        return StageResult(
            stage=stage,
            model_version=answer.model_version,
            rows=rows,
            predictions=answer.predictions,
            started=duration(started - arrived),
            took=duration(time.perf_counter() - started),
        )

    upstream_errors: dict[int | str, dict[str, Any]] = {
        502: {"description": "A stage answered something the chain cannot use (named)"},
        503: {"description": "A stage is unreachable, saturated or not ready (named); retry later"},
        504: {"description": "A stage did not answer within its deadline (named)"},
    }

    @app.post("/predict", tags=["model"], responses={**BODY_ERRORS, **upstream_errors})
    async def predict(body: DigitsRequest) -> ChainResponse:
        """Name the digit in each 8x8 image (64 intensities 0..16, row by row): stage 1 tells the
        half, and the specialist it chooses names the digit."""
        arrived = time.perf_counter()
        check_rows(body.data, None, settings.max_rows)
        everything = list(range(len(body.data)))
        coarse = await run_stage("coarse", everything, body.data, arrived)
        stages = [coarse]
        final: list[Prediction] = list(coarse.predictions)  # each replaced by its specialist's
        # One specialist after the other: the chain's stages never overlap (when one request
        # needs both, calling them at once would be the horizontal pattern's move).
        for specialist, rows in route(coarse.predictions).items():
            data = [specialist_input(body.data[i], coarse.predictions[i]) for i in rows]
            result = await run_stage(specialist, rows, data, arrived)
            stages.append(result)
            for row, prediction in zip(rows, result.predictions, strict=True):
                final[row] = prediction
        return ChainResponse(
            predictions=final,
            # The chain's version is its stages': the specialists were trained on stage 1's output.
            model_version=",".join(f"{s.stage}:{s.model_version}" for s in stages),
            request_id=request_id_var.get(),
            stages=stages,
            took=duration(time.perf_counter() - arrived),
        )

    @app.get("/metadata", tags=["model"], responses=upstream_errors)
    async def metadata() -> Metadata:
        """The chain: stage 1's input, the specialists' labels, every stage's model."""
        cards = {
            stage: read_answer(
                await client.call("GET", "/metadata"), Metadata, f"the {stage} stage"
            )
            for stage, client in stages.items()
        }
        coarse = cards["coarse"]
        return Metadata(
            model_name="digits-chain",
            model_version=",".join(f"{s}:{card.model_version}" for s, card in cards.items()),
            feature_names=coarse.feature_names,
            labels=[label for s in SPECIALIST_FOR.values() for label in cards[s].labels],
            input_schema=DigitsRequest.model_json_schema(),
            sample_input={"data": [THREE, SEVEN]},
            extra={
                "specialist_for": SPECIALIST_FOR,
                "stages": {s: card.model_name for s, card in cards.items()},
            },
        )

    return app
