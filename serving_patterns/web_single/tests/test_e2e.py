"""End to end: the pattern started from its compose file through local mode, over HTTP."""

import json
from pathlib import Path

import httpx2
import pytest
import yaml

from shared.testing import pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]

pytestmark = pytest.mark.e2e


def test_one_service_alone_serves_predictions_from_raw_input() -> None:
    services = yaml.safe_load((PATTERN / "compose.yaml").read_text())["services"]
    assert list(services) == ["api"]  # nothing else runs: no model server, no cache, no queue

    with pattern_running(PATTERN) as pattern:
        url = pattern.url("api")
        health = httpx2.get(f"{url}/health")
        ready = httpx2.get(f"{url}/ready")
        metadata = httpx2.get(f"{url}/metadata").json()
        answer = httpx2.post(
            f"{url}/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "e2e-1"}
        )

    assert health.status_code == 200
    assert ready.status_code == 200
    assert metadata["model_name"] == "iris"
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["label"] == "setosa"
    assert answer.json()["request_id"] == "e2e-1"


def test_replicas_give_identical_answers() -> None:
    rows = [SETOSA, [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
    with pattern_running(PATTERN) as first, pattern_running(PATTERN) as second:
        answers = [
            httpx2.post(f"{replica.url('api')}/predict", json={"data": rows}).json()["predictions"]
            for replica in (first, second)
        ]

    assert answers[0] == answers[1]
    assert [p["label"] for p in answers[0]] == ["setosa", "versicolor", "virginica"]


def test_a_rejected_request_is_logged_with_its_request_id() -> None:
    with pattern_running(PATTERN) as pattern:
        httpx2.post(
            f"{pattern.url('api')}/predict",
            json={"data": [[1.0, 2.0]]},
            headers={"X-Request-ID": "trace-me"},
        )
        line = wait_until(
            lambda: next((ln for ln in pattern.logs("api").splitlines() if "trace-me" in ln), None),
            timeout=10,
            what="the log line of the rejected request",
        )

    record = json.loads(line)
    assert record["request_id"] == "trace-me"
    assert record["message"].startswith("POST /predict 422")
