"""End to end: the proxy and the three model servers, from compose.yaml through local mode."""

import time
from pathlib import Path

import httpx2
import pytest

from shared.testing import LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]

pytestmark = pytest.mark.e2e


def predict(url: str, *rows: list[float], request_id: str | None = None) -> httpx2.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return httpx2.post(f"{url}/predict", json={"data": list(rows)}, headers=headers, timeout=30)


def seconds(duration: str) -> float:
    """'0.004827s', as the answer shows a time, in seconds."""
    return float(duration.removesuffix("s"))


def predictions_logged(pattern: LocalPattern, service: str, request_id: str) -> int:
    """How many POST /predict the service logged for the request (DEBUG logs every request)."""
    return sum(
        1
        for line in pattern.logs(service).splitlines()
        if request_id in line and "POST /predict" in line
    )


def test_every_model_is_asked_at_once_so_latency_is_the_slowest_not_the_sum() -> None:
    delays = {"FOREST": 500, "SVM": 600, "MLP": 700}
    with pattern_running(
        PATTERN,
        MICROSERVICE_HORIZONTAL_PROXY_MODEL_TIMEOUT_SECONDS="5",
        **{f"MICROSERVICE_HORIZONTAL_{m}_DELAY_MS": str(ms) for m, ms in delays.items()},
    ) as pattern:
        url = pattern.url("proxy")
        predict(url, SETOSA)  # connections made: the timed call measures the fan-out only
        started = time.perf_counter()
        response = predict(url, SETOSA, VIRGINICA)
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    body = response.json()
    assert body["aggregate"] == "mean_probability"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    for model, ms in delays.items():
        answer = body["models"][model.lower()]
        assert answer["status"] == "ok"
        assert seconds(answer["took"]) >= ms / 1000
    # 0.7 s, the slowest: one after another would take 1.8 s. The margin is for a loaded
    # machine and stays well below the sum.
    assert 0.7 <= elapsed < 1.5


def test_a_late_or_absent_model_is_marked_and_the_others_still_answer() -> None:
    timeout = 0.5
    with pattern_running(
        PATTERN,
        MICROSERVICE_HORIZONTAL_SVM_DELAY_MS="5000",
        MICROSERVICE_HORIZONTAL_PROXY_MODEL_TIMEOUT_SECONDS=str(timeout),
    ) as pattern:
        url = pattern.url("proxy")
        started = time.perf_counter()
        late = predict(url, VIRGINICA)
        late_elapsed = time.perf_counter() - started
        pattern.kill("mlp")
        absent = predict(url, VIRGINICA)
        ready = httpx2.get(f"{url}/ready")
        pattern.kill("forest")
        none_left = predict(url, VIRGINICA)

    assert late.status_code == 200
    body = late.json()
    assert body["models"]["svm"] == {
        "status": "timeout",
        "detail": "the svm model did not answer within 0.5 s",
        "took": body["models"]["svm"]["took"],
    }
    assert [body["models"][m]["status"] for m in ("forest", "mlp")] == ["ok", "ok"]
    assert body["model_version"] == "forest:1.0.0,mlp:1.0.0"  # the aggregate is theirs
    assert body["predictions"][0]["label"] == "virginica"
    assert timeout <= late_elapsed < timeout + 2.5  # cut at the deadline, not after the 5 s
    assert absent.status_code == 200
    assert absent.json()["models"]["mlp"] == {
        "status": "error",
        "detail": "the mlp model is unreachable (ConnectError)",
        "took": absent.json()["models"]["mlp"]["took"],
    }
    assert absent.json()["model_version"] == "forest:1.0.0"
    assert ready.status_code == 200  # one model answering is enough to serve
    # Only with no model answering is the request an error.
    assert none_left.status_code == 504
    assert none_left.json()["detail"].startswith("no model answered in time: ")


def test_the_set_of_models_is_configuration_and_each_gets_the_request_id() -> None:
    with pattern_running(
        PATTERN,
        MICROSERVICE_HORIZONTAL_PROXY_BACKENDS="forest=http://forest:8061,mlp=http://mlp:8063",
        **{f"MICROSERVICE_HORIZONTAL_{m}_LOG_LEVEL": "DEBUG" for m in ("FOREST", "SVM", "MLP")},
    ) as pattern:
        url = pattern.url("proxy")
        response = predict(url, SETOSA, request_id="fan-1")
        wait_until(
            lambda: all(predictions_logged(pattern, m, "fan-1") for m in ("forest", "mlp")),
            timeout=10,
            what="forest's and mlp's log lines for fan-1",
        )
        svm_calls = predictions_logged(pattern, "svm", "fan-1")
        too_narrow = predict(url, SETOSA[:3])
        metadata = httpx2.get(f"{url}/metadata")

    assert response.status_code == 200
    assert list(response.json()["models"]) == ["forest", "mlp"]
    assert response.json()["request_id"] == "fan-1"
    assert svm_calls == 0  # running, but not in BACKENDS: never asked
    # The same input went to every model, and none could take it: their 422, as it is.
    assert too_narrow.status_code == 422
    assert "expected 4 features" in too_narrow.text
    assert metadata.status_code == 200
    assert metadata.json()["extra"]["models"] == {"forest": "iris-forest", "mlp": "iris-mlp"}
