"""End to end: predictor and proxy started from compose.yaml through local mode, over HTTP. The
shedding tests run against both proxies, proxy.py and nginx (compose's `nginx` profile, run
with the machine's nginx and the pattern's template); the breaker is proxy.py's alone. The
predictor's own request counter (its GET /metrics) says how many requests reached it."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from serving_patterns.prediction_circuit_break.client import FALLBACK_LABEL, classify
from shared.testing import (
    LocalPattern,
    nginx_binary,
    pattern_running,
    requests_counted,
    wait_until,
)

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
PROXIES = ["proxy", "nginx"]

pytestmark = pytest.mark.e2e


@contextmanager
def running(
    proxy: str, limit: int = 4, delay: float = 1.0, **variables: str
) -> Iterator[LocalPattern]:
    """The pattern with `proxy` in front (proxy.py runs in both cases, as in compose), `limit`
    predictions at once and a predictor that takes `delay` seconds."""
    if proxy == "nginx" and nginx_binary() is None:
        pytest.skip("no nginx on this machine (Debian: apt-get install nginx-light)")
    settings = {
        "PREDICTION_CIRCUIT_BREAK_PROXY_MAX_IN_FLIGHT": str(limit),
        "PREDICTION_CIRCUIT_BREAK_NGINX_MAX_IN_FLIGHT": str(limit),
        "PREDICTION_CIRCUIT_BREAK_PREDICTOR_DELAY_SECONDS": str(delay),
        # Well above the delay: a slow prediction is not a timeout here.
        "PREDICTION_CIRCUIT_BREAK_PROXY_TIMEOUT_SECONDS": "5",
        "PREDICTION_CIRCUIT_BREAK_NGINX_TIMEOUT_SECONDS": "5",
        **({"COMPOSE_PROFILES": "nginx"} if proxy == "nginx" else {}),
        **variables,
    }
    with pattern_running(PATTERN, **settings) as pattern:
        yield pattern


def predictor_calls(p: LocalPattern, status: str | None = None) -> float:
    """POST /predict requests the predictor has answered (with `status`): its own count."""
    metrics = httpx2.get(f"{p.url('predictor')}/metrics").text
    labels = {"status": status} if status else {}
    return requests_counted(
        metrics, service="prediction-circuit-break-predictor", route="/predict", **labels
    )


async def timed_burst(url: str, n: int) -> list[tuple[httpx2.Response, float]]:
    """n requests at once, each on its own connection: each answer and its time in seconds."""
    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx2.AsyncClient(timeout=30, limits=limits) as client:

        async def one(i: int) -> tuple[httpx2.Response, float]:
            started = time.perf_counter()
            response = await client.post(
                f"{url}/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": f"burst-{i}"}
            )
            return response, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(n)))


def fallback_body(limit: int, request_id: str) -> dict[str, Any]:
    return {
        "predictions": None,
        "model_version": None,
        "request_id": request_id,
        "fallback": "shed",
        "detail": f"over the limit of {limit} predictions at once: shed before the predictor",
        "retry_after_seconds": 1,
    }


@pytest.mark.parametrize("proxy", PROXIES)
def test_requests_up_to_the_limit_are_all_forwarded_and_succeed(proxy: str) -> None:
    with running(proxy, limit=4, delay=0.5) as p:
        url = p.url(proxy)
        answers = asyncio.run(timed_burst(url, 4))
        calls = predictor_calls(p)

    assert [r.status_code for r, _ in answers] == [200] * 4
    assert {r.json()["predictions"][0]["label"] for r, _ in answers} == {"setosa"}
    assert calls == 4


@pytest.mark.parametrize("proxy", PROXIES)
def test_over_the_limit_the_excess_gets_an_immediate_503_with_a_fallback_and_never_reaches_the_predictor(  # noqa: E501
    proxy: str,
) -> None:
    limit, delay = 4, 2.0  # every request of the burst arrives while the first ones predict
    with running(proxy, limit=limit, delay=delay) as p:
        url = p.url(proxy)
        answers = asyncio.run(timed_burst(url, 3 * limit))
        calls, errors = predictor_calls(p), predictor_calls(p, "500")
        predictor = p.url("predictor")
        healthy = [httpx2.get(f"{predictor}/{check}").status_code for check in ("health", "ready")]

    admitted = [(r, s) for r, s in answers if r.status_code == 200]
    shed = [(r, s) for r, s in answers if r.status_code != 200]
    assert len(admitted) == limit  # exactly the limit got through: never more at once
    assert calls == limit  # and the predictor saw only those
    assert errors == 0 and healthy == [200, 200]
    assert all(seconds >= delay for _, seconds in admitted)
    assert len(shed) == 2 * limit
    for response, seconds in shed:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        request_id = response.headers["x-request-id"]
        assert request_id.startswith("burst-")
        assert response.json() == fallback_body(limit, request_id)
        assert seconds < delay / 2  # at once, not after waiting for a slot


@pytest.mark.parametrize("proxy", PROXIES)
def test_when_the_load_drops_everything_is_served_again_with_no_reset(proxy: str) -> None:
    with running(proxy, limit=2, delay=1.0) as p:
        url = p.url(proxy)
        burst = asyncio.run(timed_burst(url, 8))
        after = [httpx2.post(f"{url}/predict", json={"data": [SETOSA]}) for _ in range(3)]
        again = asyncio.run(timed_burst(url, 2))  # the full limit, at once, once more

    assert sorted(r.status_code for r, _ in burst) == [200] * 2 + [503] * 6
    assert [r.status_code for r in after] == [200] * 3
    assert [r.status_code for r, _ in again] == [200] * 2


@pytest.mark.parametrize("proxy", PROXIES)
def test_the_client_falls_back_on_a_rejection_instead_of_failing(proxy: str) -> None:
    with running(proxy, limit=3, delay=1.5) as p:
        url = p.url(proxy)

        async def clients() -> list[Any]:
            limits = httpx2.Limits(max_connections=12)
            async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                return await asyncio.gather(*(classify(client, [SETOSA]) for _ in range(12)))

        answers = asyncio.run(clients())

    predicted = [a for a in answers if a.fallback is None]
    fell_back = [a for a in answers if a.fallback is not None]
    assert [a.labels for a in predicted] == [["setosa"]] * 3
    assert len(fell_back) == 9
    assert all(a.labels == [FALLBACK_LABEL] and a.fallback == "shed" for a in fell_back)
    assert all(a.retry_after_seconds == 1 for a in fell_back)


@pytest.mark.parametrize("proxy", PROXIES)
def test_the_limit_is_configurable(proxy: str) -> None:
    with running(proxy, limit=7, delay=2.0) as p:
        url = p.url(proxy)
        answers = asyncio.run(timed_burst(url, 10))

    assert sorted(r.status_code for r, _ in answers) == [200] * 7 + [503] * 3
    assert "over the limit of 7 predictions" in next(
        r.text for r, _ in answers if r.status_code == 503
    )


@pytest.mark.parametrize("proxy", PROXIES)
def test_the_predictors_own_answers_pass_through_unchanged(proxy: str) -> None:
    with running(proxy, delay=0) as p:
        url = p.url(proxy)
        good = httpx2.post(
            f"{url}/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "mine-1"}
        )
        direct = httpx2.post(
            f"{p.url('predictor')}/predict",
            json={"data": [SETOSA]},
            headers={"X-Request-ID": "mine-1"},
        )
        wrong_width = httpx2.post(f"{url}/predict", json={"data": [[5.1, 3.5]]})
        metadata = httpx2.get(f"{url}/metadata")

    assert good.status_code == 200
    assert good.json() == direct.json()
    assert good.json()["request_id"] == good.headers["x-request-id"] == "mine-1"
    assert wrong_width.status_code == 422
    assert "expected 4 features" in wrong_width.text
    assert metadata.json()["model_name"] == "iris"


@pytest.mark.parametrize("proxy", PROXIES)
def test_a_predictor_that_is_down_gives_the_fallback_at_once(proxy: str) -> None:
    with running(proxy, delay=0) as p:
        url = p.url(proxy)
        p.kill("predictor")
        started = time.perf_counter()
        down = httpx2.post(f"{url}/predict", json={"data": [SETOSA]})
        seconds = time.perf_counter() - started

    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert down.json()["fallback"] == "predictor unavailable"
    assert down.json()["predictions"] is None
    assert seconds < 2.5  # refused at once, not after the 5 s timeout


def test_failures_in_a_row_open_the_circuit_and_a_probe_closes_it_when_the_predictor_is_back() -> (
    None
):
    with running(
        "proxy",
        delay=0,
        PREDICTION_CIRCUIT_BREAK_PROXY_FAILURE_THRESHOLD="3",
        PREDICTION_CIRCUIT_BREAK_PROXY_OPEN_SECONDS="2",
    ) as p:
        url = p.url("proxy")

        def fallback_of(response: httpx2.Response) -> str | None:
            return response.json().get("fallback")  # type: ignore[no-any-return]

        def predict() -> httpx2.Response:
            return httpx2.post(f"{url}/predict", json={"data": [SETOSA]}, timeout=10)

        assert predict().status_code == 200
        p.kill("predictor")
        failing = [fallback_of(predict()) for _ in range(3)]
        opened_at = time.monotonic()
        while_open = predict()
        p.start_replica("predictor")  # back, but the circuit is still open
        p.wait_healthy("predictor", 1)
        still_open = predict()
        still_open_at = time.monotonic()
        # After open_seconds the next request is the probe: the predictor answers, it closes.

        def probe_passes() -> httpx2.Response | None:
            response = predict()
            return response if response.status_code == 200 else None

        closed = wait_until(probe_passes, timeout=15, what="the probe to close the circuit")
        closed_at = time.monotonic()
        after = [predict().status_code for _ in range(3)]

    assert failing == ["predictor unavailable"] * 3
    assert while_open.status_code == 503
    assert fallback_of(while_open) == "circuit open"
    assert 1 <= int(while_open.headers["retry-after"]) <= 2
    if still_open_at - opened_at < 1.5:  # the predictor came back well within the open time
        assert fallback_of(still_open) == "circuit open"
    assert closed.json()["predictions"][0]["label"] == "setosa"
    assert closed_at - opened_at >= 2 - 0.1  # not before the open time was over
    assert after == [200] * 3
