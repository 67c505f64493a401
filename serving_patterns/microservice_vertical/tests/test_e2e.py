"""End to end: the proxy and the three stages started from compose.yaml through local mode."""

import json
import time
from pathlib import Path

import httpx2
import pytest

from serving_patterns.microservice_vertical.proxy import SEVEN, THREE
from shared.testing import LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def predict(url: str, *rows: list[int], request_id: str | None = None) -> httpx2.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return httpx2.post(f"{url}/predict", json={"data": list(rows)}, headers=headers, timeout=30)


def seconds(duration: str) -> float:
    """'0.004827s', as the answer shows a time, in seconds."""
    return float(duration.removesuffix("s"))


def logged(pattern: LocalPattern, service: str, request_id: str) -> str:
    """The service's access-log line for the request (DEBUG logs every request with its id)."""
    return wait_until(
        lambda: next(
            (ln for ln in pattern.logs(service).splitlines() if request_id in ln and "POST" in ln),
            None,
        ),
        timeout=10,
        what=f"{service}'s log line for {request_id}",
    )


def test_stages_run_in_order_and_the_coarse_answer_chooses_the_specialist() -> None:
    debug = {f"MICROSERVICE_VERTICAL_{s}_LOG_LEVEL": "DEBUG" for s in ("COARSE", "LOW", "HIGH")}
    with pattern_running(PATTERN, **debug) as pattern:
        response = predict(pattern.url("proxy"), THREE, SEVEN, request_id="chain-1")
        only_three = predict(pattern.url("proxy"), THREE, request_id="chain-2")
        lines = {s: logged(pattern, s, "chain-1") for s in ("coarse", "low", "high")}
        high_log = pattern.logs("high")

    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["3", "7"]
    assert body["request_id"] == "chain-1"
    assert body["model_version"] == "coarse:1.0.0,low:1.0.0,high:1.0.0"
    stages = body["stages"]
    # Stage 1 scored both images; its answer sent each to its own specialist.
    assert [(s["stage"], s["rows"]) for s in stages] == [
        ("coarse", [0, 1]),
        ("low", [0]),
        ("high", [1]),
    ]
    assert [p["label"] for p in stages[0]["predictions"]] == ["0-4", "5-9"]
    assert stages[1]["predictions"] == [body["predictions"][0]]
    # In sequence: each stage starts after the one before it has answered.
    for before, after in zip(stages, stages[1:], strict=False):
        assert seconds(after["started"]) >= seconds(before["started"]) + seconds(before["took"])
    assert seconds(body["took"]) >= sum(seconds(s["took"]) for s in stages)
    # Every stage got the request id; a 0-4 image alone never reaches the 5-9 specialist.
    for service, line in lines.items():
        assert json.loads(line)["service"] == f"microservice-vertical-{service}"
    assert [s["stage"] for s in only_three.json()["stages"]] == ["coarse", "low"]
    assert "chain-2" not in high_log


def test_latency_is_about_the_sum_of_the_stages() -> None:
    delays = {"COARSE": 200, "LOW": 300, "HIGH": 400}
    with pattern_running(
        PATTERN,
        MICROSERVICE_VERTICAL_PROXY_STAGE_TIMEOUT_SECONDS="5",
        **{f"MICROSERVICE_VERTICAL_{s}_DELAY_MS": str(ms) for s, ms in delays.items()},
    ) as pattern:
        url = pattern.url("proxy")
        predict(url, THREE)  # connections made: the timed calls measure the chain only
        started = time.perf_counter()
        both = predict(url, THREE, SEVEN)
        elapsed = time.perf_counter() - started

    assert both.status_code == 200
    stage_seconds = {s["stage"]: seconds(s["took"]) for s in both.json()["stages"]}
    for stage, ms in delays.items():
        assert stage_seconds[stage.lower()] >= ms / 1000
    # 0.9 s, the sum: a fan-out would take about 0.4 s, the slowest. The margin is for a loaded
    # machine and stays below a fourth stage's worth.
    assert 0.9 <= elapsed < 0.9 + 1.5


def test_a_slow_stage_gives_504_and_a_stage_down_503_each_naming_the_stage() -> None:
    timeout = 0.5
    with pattern_running(
        PATTERN,
        MICROSERVICE_VERTICAL_HIGH_DELAY_MS="5000",
        MICROSERVICE_VERTICAL_PROXY_STAGE_TIMEOUT_SECONDS=str(timeout),
    ) as pattern:
        url = pattern.url("proxy")
        started = time.perf_counter()
        slow = predict(url, SEVEN)
        slow_elapsed = time.perf_counter() - started
        pattern.kill("low")
        down = predict(url, THREE)
        ready = httpx2.get(f"{url}/ready")
        health = httpx2.get(f"{url}/health")

    assert slow.status_code == 504
    assert slow.json()["detail"] == "the high stage did not answer within 0.5 s"
    assert timeout <= slow_elapsed < timeout + 2.5  # cut at the deadline, not after the 5 s
    assert down.status_code == 503
    assert down.json()["detail"] == "the low stage is unreachable (ConnectError)"
    assert down.headers["retry-after"] == "1"
    assert ready.status_code == 503
    assert list(ready.json()["reasons"]) == ["low"]
    assert health.status_code == 200  # the proxy itself is fine: no restart would help


def test_input_the_first_stage_refuses_is_the_callers_422() -> None:
    with pattern_running(PATTERN) as pattern:
        url = pattern.url("proxy")
        too_narrow = predict(url, THREE[:60])
        metadata = httpx2.get(f"{url}/metadata")

    assert too_narrow.status_code == 422
    assert "expected 64 features" in too_narrow.text
    assert metadata.status_code == 200
    assert metadata.json()["labels"] == [str(d) for d in range(10)]
    assert metadata.json()["extra"]["stages"] == {
        "coarse": "digits-coarse",
        "low": "digits-low",
        "high": "digits-high",
    }
