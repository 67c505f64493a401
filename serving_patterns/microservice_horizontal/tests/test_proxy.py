"""In-process tests of the proxy: the aggregate, the errors when no model answers, the backends.

The aggregate and the error choice are pure logic, tested directly. Adding a backend is shown
with real model servers (shared.predict_route.serve_model) served on loopback in threads.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import httpx2
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from serving_patterns.microservice_horizontal.proxy import (
    ModelAnswer,
    create_app,
    mean_probability,
    no_answer,
)
from serving_patterns.microservice_horizontal.settings import ProxySettings
from shared.predict_route import serve_model
from shared.schemas import Prediction
from shared.settings import ModelServiceSettings
from shared.testing import free_port, served, wait_until

MODELS = Path(__file__).resolve().parents[3] / "models"
SETOSA = [5.1, 3.5, 1.4, 0.2]


def prediction(**probabilities: float) -> Prediction:
    return Prediction(
        label=max(probabilities, key=probabilities.__getitem__), probabilities=probabilities
    )


def test_mean_probability_averages_each_class_and_labels_the_most_probable() -> None:
    # Two models say a, sure and barely; one says b, fairly sure: the mean still says a.
    answers = [
        [prediction(a=0.9, b=0.1)],
        [prediction(a=0.55, b=0.45)],
        [prediction(a=0.3, b=0.7)],
    ]

    [aggregate] = mean_probability(answers)

    assert aggregate.label == "a"
    assert aggregate.probabilities == pytest.approx({"a": 0.5833333, "b": 0.4166667})


def test_mean_probability_is_not_a_majority_vote() -> None:
    # One very sure model outweighs two unsure ones: soft voting, as documented.
    answers = [[prediction(a=0.99, b=0.01)], [prediction(a=0.4, b=0.6)], [prediction(a=0.4, b=0.6)]]

    assert mean_probability(answers)[0].label == "a"


def failed(status: int, detail: str) -> tuple[ModelAnswer, HTTPException]:
    kind = "timeout" if status == 504 else "error"
    return ModelAnswer(status=kind, detail=detail, took="0.5s"), HTTPException(status, detail)


@pytest.mark.parametrize(
    ("statuses", "status", "words"),
    [
        ([504, 504], 504, "no model answered in time: late 0; late 1"),
        ([503, 504], 504, "no model answered in time"),
        ([503, 503], 503, "no model is available"),
        ([500, 503], 502, "no model answered: "),
        ([422, 504], 422, "late 0"),
    ],
)
def test_no_answer_says_what_became_of_every_model(
    statuses: list[int], status: int, words: str
) -> None:
    results = {f"m{i}": failed(s, f"late {i}") for i, s in enumerate(statuses)}
    answers = {name: answer for name, (answer, _) in results.items()}
    failures = {name: exc for name, (_, exc) in results.items()}

    error = no_answer(answers, failures)

    assert error.status_code == status
    assert words in str(error.detail)


def test_backends_are_read_from_name_url_pairs() -> None:
    settings = ProxySettings(backends="forest=http://forest:8061, mlp=http://mlp:8063")

    assert settings.backends == {"forest": "http://forest:8061", "mlp": "http://mlp:8063"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("forest", "is not name=url"),
        ("a=http://x:1,a=http://y:2", "named twice"),
        ("", "at least 1"),
    ],
)
def test_backends_refuse_what_is_not_a_set_of_named_urls(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ProxySettings(backends=value)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[5.1, "tall", 1.4, 0.2]]}, "valid number"),
        ({"data": []}, "at least 1 item"),
        ({"rows": [SETOSA]}, "Field required"),
        ({"data": [SETOSA] * 101}, "at most 100 rows per request, got 101"),
    ],
    ids=["not a number", "empty", "no data", "too many rows"],
)
def test_predict_rejects_bad_input_without_calling_a_model(payload: object, problem: str) -> None:
    # No model listens: a 422 (not a 503) shows the proxy judged the input itself.
    settings = ProxySettings(backends={"forest": f"http://127.0.0.1:{free_port()}"})
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def ready(url: str) -> bool:
    return httpx2.get(f"{url}/ready").status_code == 200


@contextmanager
def model_servers(**model_dirs: str) -> Iterator[dict[str, str]]:
    """Real model servers for these model directories, on loopback: name -> base URL."""
    with ExitStack() as stack:
        urls = {}
        for name, model_dir in model_dirs.items():
            app = serve_model(name, ModelServiceSettings(model_dir=str(MODELS / model_dir)))
            urls[name] = stack.enter_context(served(app))
            wait_until(partial(ready, urls[name]), what=f"{name} ready")
        yield urls


def test_a_backend_is_added_by_configuration_alone() -> None:
    # Any server answering the contract's /predict joins: here the plain iris model, whose
    # server is no code of this pattern's.
    with model_servers(forest="iris_forest", logistic="iris") as urls:
        two = TestClient(create_app(ProxySettings(backends=urls)))
        one = TestClient(create_app(ProxySettings(backends={"forest": urls["forest"]})))
        with two, one:
            both = two.post("/predict", json={"data": [SETOSA]})
            alone = one.post("/predict", json={"data": [SETOSA]})

    assert both.status_code == alone.status_code == 200
    assert list(both.json()["models"]) == ["forest", "logistic"]
    assert both.json()["model_version"] == "forest:1.0.0,logistic:1.0.0"
    assert list(alone.json()["models"]) == ["forest"]
