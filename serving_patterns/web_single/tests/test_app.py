"""In-process tests of the web single service: the API contract and bad input."""

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from serving_patterns.web_single.app import create_app
from serving_patterns.web_single.settings import Settings
from shared.testing import ready_client, requests_counted, served, wait_until

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with ready_client(create_app(Settings(model_dir=str(MODEL_DIR), max_rows=5))) as client:
        yield client


def test_predict_answers_label_and_probabilities_per_row(client: TestClient) -> None:
    response = client.post("/predict", json={"data": [SETOSA, VIRGINICA]})

    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    for prediction in body["predictions"]:
        assert set(prediction["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["model_version"] == "1.0.0"


def test_predict_returns_the_callers_request_id(client: TestClient) -> None:
    response = client.post("/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "abc-1"})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-1"
    assert response.json()["request_id"] == "abc-1"


def test_predict_makes_a_request_id_when_the_caller_sends_none_or_junk(client: TestClient) -> None:
    plain = client.post("/predict", json={"data": [SETOSA]})
    junk = client.post("/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "a b\tc"})

    assert len(plain.json()["request_id"]) == 32
    assert junk.headers["x-request-id"] != "a b\tc"
    assert junk.json()["request_id"] == junk.headers["x-request-id"]


def test_predict_scales_with_features_in_the_expected_direction(client: TestClient) -> None:
    # Direction check: growing the petals moves the prediction from setosa towards virginica.
    small, large = [5.8, 3.0, 1.2, 0.2], [5.8, 3.0, 6.0, 2.4]
    body = client.post("/predict", json={"data": [small, large]}).json()

    assert body["predictions"][0]["label"] == "setosa"
    assert body["predictions"][1]["label"] == "virginica"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[5.1, 3.5, 1.4]]}, "expected 4 features"),
        ({"data": [[5.1, "tall", 1.4, 0.2]]}, "valid number"),
        ({"data": [["5.1", 3.5, 1.4, 0.2]]}, "valid number"),
        ({"data": [[True, 3.5, 1.4, 0.2]]}, "valid number"),
        ({"data": []}, "at least 1 item"),
        ({"data": [[]]}, "at least 1 item"),
        ({"data": [SETOSA] * 6}, "at most 5 rows per request, got 6"),
        ({"data": [[1e300, 3.5, 1.4, 0.2]]}, "beyond the float32 range"),
        ({"data": [SETOSA, [3e38, 3e38, -3e38, 0.2]]}, "out of the model's numeric range"),
        ({"rows": [SETOSA]}, "Field required"),
        ({"data": [SETOSA], "extra": 1}, "Extra inputs are not permitted"),
        ([SETOSA], "Input should be an object"),
    ],
)
def test_predict_rejects_bad_input_naming_the_problem(
    client: TestClient, payload: object, problem: str
) -> None:
    response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


@pytest.mark.parametrize(
    "raw", [b'{"data": [[NaN, 3.5, 1.4, 0.2]]}', b'{"data": [[1e999, 1, 1, 1]]}']
)
def test_predict_rejects_non_finite_values(client: TestClient, raw: bytes) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert "finite number" in response.text


def test_predict_rejects_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b'{"data": [[5.1,', headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert "json_invalid" in response.text


def test_predict_rejects_an_oversized_body_with_413(client: TestClient) -> None:
    response = client.post("/predict", content=b"[" + b"1," * 600_000 + b"1]")

    assert response.status_code == 413
    assert "larger than 1000000 bytes" in response.text


def test_metadata_names_the_model_and_carries_a_sample_that_predicts(client: TestClient) -> None:
    metadata = client.get("/metadata").json()

    assert metadata["model_name"] == "iris"
    assert metadata["feature_names"] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata["input_schema"]["properties"]["data"]["type"] == "array"
    assert client.post("/predict", json=metadata["sample_input"]).status_code == 200


def test_metrics_count_predictions(client: TestClient) -> None:
    client.post("/predict", json={"data": [SETOSA]})

    metrics = client.get("/metrics").text

    assert (
        'http_requests_total{method="POST",route="/predict",service="web-single",status="200"}'
        in metrics
    )


def test_openapi_documents_predict_with_its_body_and_answer(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]

    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PredictRequest"
    )
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PredictResponse"
    )


def test_not_ready_until_the_model_appears_then_serves_without_restart(tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "iris"))
    app = create_app(settings)
    with TestClient(app) as client:
        # The first load attempt runs in a thread: wait for it to have failed, not for luck.
        wait_until(
            lambda: "not loadable" in client.get("/ready").json()["reasons"]["model"],
            what="a failed load attempt",
        )
        ready = client.get("/ready")
        early = client.post("/predict", json={"data": [SETOSA]})
        assert client.get("/health").status_code == 200

        shutil.copytree(MODEL_DIR, tmp_path / "iris")

        wait_until(lambda: client.get("/ready").status_code == 200, what="model loaded")
        late = client.post("/predict", json={"data": [SETOSA]})

    assert ready.status_code == 503
    assert "model not loadable" in ready.json()["reasons"]["model"]
    assert early.status_code == 503
    assert early.headers["retry-after"] == "1"
    assert late.status_code == 200


def _count(metrics: str, status: int) -> float:
    # Answered before routing, as every refused body is: route "unmatched".
    return requests_counted(metrics, service="web-single", route="unmatched", status=str(status))


def test_a_client_that_leaves_mid_body_is_not_a_server_error() -> None:
    with served(create_app(Settings(model_dir=str(MODEL_DIR)))) as url:
        before = httpx2.get(f"{url}/metrics").text  # the process's registry: other tests count
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 40\r\n\r\n{"data": [[5.1, '
            )
        after = wait_until(
            lambda: (
                text
                if _count(text := httpx2.get(f"{url}/metrics").text, 499) > _count(before, 499)
                else None
            ),
            what="the disconnect counted as 499",
        )

    assert _count(after, 500) == _count(before, 500)
