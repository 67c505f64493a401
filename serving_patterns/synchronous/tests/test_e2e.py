"""End to end: web app and predictor started from compose.yaml through local mode, over HTTP."""

import asyncio
import json
import time
from pathlib import Path

import httpx2
import pytest

from shared.testing import pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.0, 2.9, 4.5, 1.5]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
UNSURE = [6.1, 2.8, 4.8, 1.7]  # virginica by a hair (about 51%)

pytestmark = pytest.mark.e2e


def test_webapp_blocks_until_the_prediction_returns() -> None:
    delay = 0.5
    with pattern_running(
        PATTERN,
        SYNCHRONOUS_PREDICTOR_DELAY_SECONDS=str(delay),
        SYNCHRONOUS_WEBAPP_TIMEOUT_SECONDS="3",
    ) as pattern:
        started = time.perf_counter()
        response = httpx2.post(f"{pattern.url('webapp')}/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"
    assert elapsed >= delay


def test_next_step_follows_the_predicted_class() -> None:
    with pattern_running(PATTERN) as pattern:
        response = httpx2.post(
            f"{pattern.url('webapp')}/predict",
            json={"data": [SETOSA, VERSICOLOR, VIRGINICA, UNSURE]},
        )

    assert response.status_code == 200
    body = response.json()
    labels = [p["label"] for p in body["predictions"]]
    assert labels == ["setosa", "versicolor", "virginica", "virginica"]
    actions = [f["action"] for f in body["follow_ups"]]
    assert actions == ["offer_seeds", "offer_bulbs", "book_nursery_visit", "ask_for_photo"]


def test_slow_predictor_gets_504_after_about_the_timeout_not_a_hang() -> None:
    # The margin leaves room for an overloaded CI machine and stays far below the 6 s delay.
    timeout, margin = 0.5, 2.5
    with pattern_running(
        PATTERN,
        SYNCHRONOUS_PREDICTOR_DELAY_SECONDS="6",
        SYNCHRONOUS_WEBAPP_TIMEOUT_SECONDS=str(timeout),
    ) as pattern:
        url = f"{pattern.url('webapp')}/predict"

        async def timed_call(client: httpx2.AsyncClient) -> tuple[int, str, float]:
            started = time.perf_counter()
            response = await client.post(url, json={"data": [SETOSA]})
            return response.status_code, response.text, time.perf_counter() - started

        async def burst() -> list[tuple[int, str, float]]:
            # Eight callers at once: each is cut off on its own deadline, none waits for another.
            async with httpx2.AsyncClient(timeout=10) as client:
                return await asyncio.gather(*(timed_call(client) for _ in range(8)))

        answers = asyncio.run(burst())

    for status, text, elapsed in answers:
        assert status == 504
        assert "did not answer within 0.5 s" in text
        assert timeout <= elapsed < timeout + margin


def test_predictor_down_gives_503_at_once_never_500() -> None:
    # A long timeout, so that answering at once cannot be confused with timing out.
    with pattern_running(PATTERN, SYNCHRONOUS_WEBAPP_TIMEOUT_SECONDS="5") as pattern:
        url = pattern.url("webapp")
        pattern.kill("predictor")
        started = time.perf_counter()
        response = httpx2.post(f"{url}/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started
        ready = httpx2.get(f"{url}/ready")

    assert response.status_code == 503
    assert response.json()["detail"] == "the predictor is unreachable (ConnectError)"
    assert response.headers["retry-after"] == "1"
    assert elapsed < 2.5  # refused at once (room for a loaded machine), not after the 5 s timeout
    assert ready.status_code == 503
    assert "predictor" in ready.json()["reasons"]


def test_request_id_passes_from_webapp_to_predictor() -> None:
    # At DEBUG the predictor logs every request it answers, with the request id it received.
    with pattern_running(PATTERN, SYNCHRONOUS_PREDICTOR_LOG_LEVEL="DEBUG") as pattern:
        response = httpx2.post(
            f"{pattern.url('webapp')}/predict",
            json={"data": [SETOSA]},
            headers={"X-Request-ID": "sync-trace-1"},
        )
        line = wait_until(
            lambda: next(
                (ln for ln in pattern.logs("predictor").splitlines() if "sync-trace-1" in ln), None
            ),
            timeout=10,
            what="the predictor's log line for the request",
        )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "sync-trace-1"
    assert response.json()["request_id"] == "sync-trace-1"
    record = json.loads(line)
    assert record["service"] == "synchronous-predictor"
    assert record["message"].startswith("POST /predict 200")


def test_input_the_model_cannot_take_is_refused_with_the_predictors_reason() -> None:
    with pattern_running(PATTERN) as pattern:
        url = pattern.url("webapp")
        wrong_width = httpx2.post(f"{url}/predict", json={"data": [[5.1, 3.5, 1.4]]})
        metadata = httpx2.get(f"{url}/metadata")

    assert wrong_width.status_code == 422
    assert "expected 4 features" in wrong_width.text
    assert metadata.status_code == 200
    assert metadata.json()["model_name"] == "iris"
