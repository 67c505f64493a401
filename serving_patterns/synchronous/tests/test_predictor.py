"""In-process tests of the predictor: the API contract and the injected delay."""

import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving_patterns.synchronous.predictor import create_app
from serving_patterns.synchronous.settings import PredictorSettings
from shared.testing import ready_client

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def predictor(delay_seconds: float = 0.0) -> AbstractContextManager[TestClient]:
    settings = PredictorSettings(model_dir=str(MODEL_DIR), delay_seconds=delay_seconds)
    return ready_client(create_app(settings))


def test_predict_answers_label_and_probabilities_per_row() -> None:
    with predictor() as client:
        response = client.post(
            "/predict", json={"data": [SETOSA, VIRGINICA]}, headers={"X-Request-ID": "p-1"}
        )

    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert body["request_id"] == "p-1"


def test_predict_waits_the_injected_delay() -> None:
    with predictor(delay_seconds=0.3) as client:
        started = time.perf_counter()
        response = client.post("/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[5.1, 3.5, 1.4]]}, "expected 4 features"),
        ({"data": [SETOSA] * 101}, "at most 100 rows per request, got 101"),
        ({"data": [SETOSA], "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_predict_rejects_input_that_does_not_fit_the_model(payload: object, problem: str) -> None:
    with predictor() as client:
        response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def test_delay_setting_refuses_a_negative_value() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        PredictorSettings(delay_seconds=-1)
