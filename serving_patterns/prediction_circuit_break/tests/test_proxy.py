"""The circuit breaker on its own: proxy.py in front of a stub predictor that fails, answers or
stalls on demand, both served over loopback. The stub counts the calls that reach it."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import HttpUrl

from serving_patterns.prediction_circuit_break.proxy import create_app
from serving_patterns.prediction_circuit_break.settings import ProxySettings
from shared.testing import served, wait_until

ROWS = {"data": [[5.1, 3.5, 1.4, 0.2]]}
ANSWER = {
    "predictions": [{"label": "setosa", "probabilities": {"setosa": 1.0}}],
    "model_version": "1.0.0",
    "request_id": "-",
}
OPEN_SECONDS = 0.5


@dataclass
class Stub:
    status: int = 500
    delay: float = 0.0
    calls: int = 0


@contextmanager
def proxy_to_stub(**settings: Any) -> Iterator[tuple[str, Stub]]:
    """The proxy's URL and the stub behind it (failing with 500 until told otherwise)."""
    stub = Stub()
    upstream = FastAPI()

    @upstream.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @upstream.post("/predict")
    async def predict() -> JSONResponse:
        stub.calls += 1
        await asyncio.sleep(stub.delay)
        body = ANSWER if stub.status == 200 else {"detail": f"stub answers {stub.status}"}
        return JSONResponse(body, status_code=stub.status)

    with served(upstream) as stub_url:
        config = {"failure_threshold": 3, "open_seconds": OPEN_SECONDS, **settings}
        proxy = create_app(ProxySettings(predictor_url=HttpUrl(stub_url), **config))
        with served(proxy) as url:
            yield url, stub


def predict(url: str) -> httpx2.Response:
    return httpx2.post(f"{url}/predict", json=ROWS, timeout=10)


def fallback_of(response: httpx2.Response) -> str | None:
    return response.json().get("fallback") if response.status_code == 503 else None


def answered(response: httpx2.Response) -> httpx2.Response | None:
    return response if response.status_code == 200 else None


def open_the_circuit(url: str, stub: Stub) -> None:
    stub.status = 500
    assert [predict(url).status_code for _ in range(3)] == [502] * 3


def test_failures_in_a_row_open_the_circuit_and_then_the_predictor_is_not_called() -> None:
    with proxy_to_stub(open_seconds=30) as (url, stub):
        failing = [predict(url) for _ in range(3)]
        calls_when_opened = stub.calls
        started = time.perf_counter()
        while_open = [predict(url) for _ in range(5)]
        seconds = time.perf_counter() - started

    assert [r.status_code for r in failing] == [502] * 3
    assert "the predictor answered 500" in failing[0].text
    assert calls_when_opened == stub.calls == 3  # none of the five reached it
    for response in while_open:
        assert response.status_code == 503
        assert response.json()["fallback"] == "circuit open"
        assert response.json()["predictions"] is None
        assert 29 <= int(response.headers["retry-after"]) <= 30  # when the probe may go
    assert seconds < 2.5  # five answers, no call, each on a new connection (a loaded CI: 1.3 s)


def test_a_success_between_failures_starts_the_count_again() -> None:
    with proxy_to_stub() as (url, stub):
        answers = []
        for status in (500, 500, 200, 500, 500, 200):
            stub.status = status
            answers.append(predict(url).status_code)

    assert answers == [502, 502, 200, 502, 502, 200]  # never three in a row: never open
    assert stub.calls == 6


def test_the_callers_own_mistakes_never_open_the_circuit() -> None:
    with proxy_to_stub() as (url, stub):
        stub.status = 422
        answers = [predict(url).status_code for _ in range(6)]

    assert answers == [422] * 6
    assert stub.calls == 6


def test_timeouts_count_as_failures() -> None:
    with proxy_to_stub(timeout_seconds=0.2, open_seconds=30) as (url, stub):
        stub.status, stub.delay = 200, 1.0
        answers = [predict(url) for _ in range(4)]

    assert [r.status_code for r in answers[:3]] == [504] * 3
    assert fallback_of(answers[3]) == "circuit open"
    assert stub.calls == 3  # the fourth was not sent


def test_half_open_lets_one_probe_through_and_its_failure_opens_the_circuit_again() -> None:
    with proxy_to_stub() as (url, stub):
        open_the_circuit(url, stub)
        # Not a wait for luck: the open time is the behaviour under test, and no request may
        # be sent to see whether it is over (that request would be the probe).
        time.sleep(OPEN_SECONDS + 0.1)
        stub.delay = 0.5  # the probe stays at the predictor while the others arrive
        calls_before = stub.calls

        async def together() -> list[httpx2.Response]:
            async with httpx2.AsyncClient(timeout=10) as client:
                first = asyncio.ensure_future(client.post(f"{url}/predict", json=ROWS))
                await asyncio.sleep(0.2)  # the probe is in
                others = await asyncio.gather(
                    *(client.post(f"{url}/predict", json=ROWS) for _ in range(4))
                )
                return [await first, *others]

        probe, *others = asyncio.run(together())
        probe_calls = stub.calls - calls_before
        after_failed_probe = predict(url)

    assert probe_calls == 1
    assert probe.status_code == 502  # the probe failed ...
    assert [fallback_of(r) for r in others] == ["circuit open"] * 4
    assert fallback_of(after_failed_probe) == "circuit open"  # ... so it is open again
    assert stub.calls == calls_before + 1


def test_a_successful_probe_closes_the_circuit() -> None:
    with proxy_to_stub() as (url, stub):
        open_the_circuit(url, stub)
        stub.status = 200  # the predictor recovers while the circuit is open
        assert fallback_of(predict(url)) == "circuit open"
        probe = wait_until(lambda: answered(predict(url)), timeout=5, what="the probe to pass")
        after = [predict(url).status_code for _ in range(5)]

    assert probe.json()["predictions"][0]["label"] == "setosa"
    assert after == [200] * 5


@pytest.mark.parametrize("limit", [1, 3])
def test_over_the_limit_a_request_is_shed_without_a_call(limit: int) -> None:
    with proxy_to_stub(max_in_flight=limit) as (url, stub):
        stub.status, stub.delay = 200, 0.5

        async def burst() -> list[httpx2.Response]:
            limits = httpx2.Limits(max_connections=3 * limit)
            async with httpx2.AsyncClient(timeout=10, limits=limits) as client:
                return await asyncio.gather(
                    *(client.post(f"{url}/predict", json=ROWS) for _ in range(3 * limit))
                )

        answers = asyncio.run(burst())

    assert sorted(r.status_code for r in answers) == [200] * limit + [503] * 2 * limit
    assert {fallback_of(r) for r in answers if r.status_code == 503} == {"shed"}
    assert stub.calls == limit
