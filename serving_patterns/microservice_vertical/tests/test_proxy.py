"""In-process tests of the proxy: the routing, the specialists' input, the errors naming a stage.

The routing and the mapping of a stage's answers are pure logic, tested directly. A stage that
answers 500 is something the real stages cannot be made to do: small FastAPI stand-ins, served on
loopback, play the stages there.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from serving_patterns.microservice_vertical.proxy import (
    SEVEN,
    SPECIALIST_FOR,
    THREE,
    create_app,
    read_stage,
    route,
    specialist_input,
)
from serving_patterns.microservice_vertical.settings import ProxySettings
from shared.schemas import Prediction
from shared.testing import free_port, served


def coarse(label: str) -> Prediction:
    sure = {"0-4": 0.9, "5-9": 0.1} if label == "0-4" else {"0-4": 0.2, "5-9": 0.8}
    return Prediction(label=label, probabilities=sure)


def test_route_sends_each_row_to_the_specialist_its_coarse_label_names() -> None:
    routed = route([coarse("5-9"), coarse("0-4"), coarse("5-9")])

    assert routed == {"high": [0, 2], "low": [1]}


def test_route_refuses_a_coarse_answer_of_labels_the_chain_does_not_know() -> None:
    stranger = Prediction(label="odd", probabilities={"odd": 0.7, "even": 0.3})

    with pytest.raises(HTTPException) as caught:
        route([stranger])

    assert caught.value.status_code == 502
    assert "the coarse stage answered the labels ['even', 'odd']" in str(caught.value.detail)


def test_specialist_input_is_the_image_then_the_coarse_probabilities_in_routing_order() -> None:
    row = specialist_input(THREE, coarse("5-9"))

    assert list(SPECIALIST_FOR) == ["0-4", "5-9"]
    assert row == [*THREE, 0.2, 0.8]


ANSWER = {
    "predictions": [{"label": "3", "probabilities": {"3": 0.9, "4": 0.1}}],
    "model_version": "1.0.0",
    "request_id": "r-1",
}


@pytest.mark.parametrize(
    ("upstream", "status", "words"),
    [
        (httpx2.Response(500, text="Internal Server Error"), 502, "the low stage answered 500"),
        (httpx2.Response(404, json={"detail": "Not Found"}), 502, "answered 404: Not Found"),
        (httpx2.Response(503, json={"detail": "model loading"}), 503, "low stage is not ready"),
        (httpx2.Response(200, json={"predictions": "junk"}), 502, "does not fit the contract"),
        (httpx2.Response(200, text="<html>"), 502, "does not fit the contract"),
        # One prediction short: the chain would lose a row.
        (httpx2.Response(200, json={**ANSWER, "predictions": []}), 502, "does not fit"),
    ],
)
def test_read_stage_maps_a_stage_failure_to_an_error_naming_the_stage(
    upstream: httpx2.Response, status: int, words: str
) -> None:
    with pytest.raises(HTTPException) as caught:
        read_stage("low", upstream, [4])

    assert caught.value.status_code == status
    assert words in str(caught.value.detail)


def test_read_stage_passes_a_refused_input_on_with_the_requests_row_numbers() -> None:
    # The specialist was sent rows 3 and 7 of the request as its rows 0 and 1.
    refused = [{"type": "value_error", "loc": ["body", "data", 1], "msg": "out of range"}]

    with pytest.raises(HTTPException) as caught:
        read_stage("high", httpx2.Response(422, json={"detail": refused}), [3, 7])

    assert caught.value.status_code == 422
    renumbered: Any = caught.value.detail  # FastAPI types it str; any JSON goes
    assert renumbered == [{**refused[0], "loc": ["body", "data", 7]}]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[1, "dark", 3]]}, "valid number"),
        ({"data": []}, "at least 1 item"),
        ({"images": [THREE]}, "Field required"),
        ({"data": [THREE] * 101}, "at most 100 rows per request, got 101"),
    ],
    ids=["not a number", "empty", "no data", "too many rows"],
)
def test_predict_rejects_bad_input_without_calling_a_stage(payload: object, problem: str) -> None:
    # No stage listens: a 422 (not a 503) shows the proxy judged the input itself.
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = ProxySettings(coarse_url=nowhere, low_url=nowhere, high_url=nowhere)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def stand_in(status: int, answer: dict[str, Any]) -> FastAPI:
    """A stage that answers every /predict with `answer` and `status`, and is always ready."""
    app = FastAPI()

    @app.post("/predict")
    async def predict() -> JSONResponse:
        return JSONResponse(answer, status_code=status)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


@contextmanager
def chain(coarse: FastAPI, low: FastAPI, high: FastAPI) -> Iterator[TestClient]:
    """The proxy in front of stand-in stages served on loopback."""
    with served(coarse) as coarse_url, served(low) as low_url, served(high) as high_url:
        settings = ProxySettings(coarse_url=coarse_url, low_url=low_url, high_url=high_url)
        with TestClient(create_app(settings)) as client:
            yield client


COARSE_SAYS_HIGH = {
    "predictions": [{"label": "5-9", "probabilities": {"0-4": 0.1, "5-9": 0.9}}],
    "model_version": "1.0.0",
    "request_id": "r-1",
}


def test_a_failing_stage_stops_the_chain_with_a_502_naming_it() -> None:
    with chain(
        coarse=stand_in(200, COARSE_SAYS_HIGH),
        low=stand_in(200, ANSWER),
        high=stand_in(500, {"detail": "onnxruntime: bad input"}),
    ) as client:
        response = client.post("/predict", json={"data": [SEVEN]})

    assert response.status_code == 502
    assert response.json()["detail"] == "the high stage answered 500: onnxruntime: bad input"
