"""The cache's mechanics on their own: the key, single flight, and the store against a private
redis-server that the tests stop, pause and start again."""

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from serving_patterns.prediction_cache.cache import (
    PredictionStore,
    SingleFlight,
    cache_key,
    connect,
)
from shared.schemas import PredictRequest
from shared.testing import RedisServer

SETOSA = [5.1, 3.5, 1.4, 0.2]


def rows(body: str) -> list[list[float]]:
    """The rows as the proxy has them: parsed and validated from a request body."""
    return PredictRequest.model_validate_json(body).data


# --- the key --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"data": [[5.1, 3.5, 1.4, 0.2]]}',
        '{"data":[[5.10,3.50,1.4,0.2]]}',
        '{"data": [[51e-1, 3.5e0, 14E-1, 2e-1]]}',
        '{"data": [[5.1000000001, 3.5, 1.4, 0.2]]}',  # the same float32: the same model input
    ],
)
def test_cache_key_is_the_same_for_the_same_input_however_it_is_written(body: str) -> None:
    assert cache_key("p", "1.0.0", rows(body)) == cache_key("p", "1.0.0", [SETOSA])


def test_cache_key_takes_integers_and_negative_zero_as_the_numbers_they_are() -> None:
    assert cache_key("p", "1", rows('{"data": [[5, 3, -0.0, 0]]}')) == cache_key(
        "p", "1", [[5.0, 3.0, 0.0, 0.0]]
    )


@pytest.mark.parametrize(
    ("version", "data"),
    [
        ("2.0.0", [SETOSA]),  # a new model version never finds the old one's answers
        ("1.0.0", [[5.1, 3.5, 1.4, 0.3]]),
        ("1.0.0", [SETOSA, SETOSA]),
        ("1.0.0", [[5.1, 3.5], [1.4, 0.2]]),  # each row carries its length
        ("1.0.", [[0.0, 5.1, 3.5, 1.4, 0.2]]),  # and so does the version
    ],
)
def test_cache_key_differs_by_model_version_and_by_input(
    version: str, data: list[list[float]]
) -> None:
    assert cache_key("p", version, data) != cache_key("p", "1.0.0", [SETOSA])


def test_cache_key_is_a_fixed_length_hash_under_the_prefix() -> None:
    key = cache_key("prediction-cache", "1.0.0", [SETOSA] * 100)

    assert key.startswith("prediction-cache:")
    assert len(key) == len("prediction-cache:") + 64


# --- single flight --------------------------------------------------------------------------------


def test_single_flight_runs_one_call_for_concurrent_callers_of_a_key() -> None:
    calls = []

    async def predict(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.05)
        return f"answer for {key}"

    async def main() -> list[str]:
        flights: SingleFlight[str] = SingleFlight()
        same = [flights.do("x", lambda: predict("x")) for _ in range(10)]
        return await asyncio.gather(*same, flights.do("y", lambda: predict("y")))

    answers = asyncio.run(main())

    assert calls == ["x", "y"]
    assert answers == ["answer for x"] * 10 + ["answer for y"]


def test_single_flight_calls_again_once_the_call_has_landed() -> None:
    calls = 0

    async def predict() -> int:
        nonlocal calls
        calls += 1
        return calls

    async def main() -> list[int]:
        flights: SingleFlight[int] = SingleFlight()
        return [await flights.do("x", predict), await flights.do("x", predict)]

    assert asyncio.run(main()) == [1, 2]


def test_single_flight_shares_a_failure_and_survives_a_caller_that_goes_away() -> None:
    async def failing() -> str:
        await asyncio.sleep(0.05)
        raise ValueError("the predictor said no")

    async def main() -> tuple[list[BaseException | str], str]:
        flights: SingleFlight[str] = SingleFlight()
        quitter = asyncio.ensure_future(flights.do("x", failing))
        others = [flights.do("x", failing) for _ in range(3)]
        await asyncio.sleep(0.01)
        quitter.cancel()  # its client hung up: the others still get their answer
        shared = await asyncio.gather(*others, return_exceptions=True)
        return shared, await flights.do("y", lambda: asyncio.sleep(0, "y"))

    shared, after = asyncio.run(main())

    assert [str(e) for e in shared] == ["the predictor said no"] * 3
    assert after == "y"


# --- the store in Redis ---------------------------------------------------------------------------


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    yield redis_server
    if redis_server.process:  # a test may have paused it: it must take its SIGTERM
        redis_server.process.signal(signal.SIGCONT)


def _store(url: str, ttl: float = 60, retry: float = 0.3, timeout: float = 0.3) -> PredictionStore:
    """A store with a client configured as the proxy's (its own pool: one per event loop)."""
    return PredictionStore(connect(url, timeout, 10), ttl, retry)


def test_store_keeps_an_answer_for_its_ttl_then_forgets_it(server: RedisServer) -> None:
    async def main() -> tuple[bytes | None, int, bytes | None]:
        store = _store(server.url, ttl=0.5)
        await store.put("k", b"answer")
        kept, ttl_ms = await store.get("k"), await store.redis.pttl("k")
        await asyncio.sleep(0.7)
        forgotten = await store.get("k")
        await store.redis.aclose()
        return kept, ttl_ms, forgotten

    kept, ttl_ms, forgotten = asyncio.run(main())

    assert kept == b"answer"
    assert 0 < ttl_ms <= 500
    assert forgotten is None


def test_store_reads_a_stopped_redis_as_a_miss_at_once_and_resumes_when_it_is_back(
    server: RedisServer,
) -> None:
    async def main() -> tuple[list[bytes | None], float, bytes | None]:
        store = _store(server.url, retry=0.3, timeout=5)
        await store.put("k", b"answer")
        server.stop()
        started = time.perf_counter()
        down = [await store.get("k"), await store.get("k")]
        await store.put("k2", b"lost, not an error")
        elapsed = time.perf_counter() - started
        server.start()  # empty: a cache keeps nothing on disk
        await asyncio.sleep(0.4)  # past retry_seconds, so Redis is asked again

        async def stored() -> bytes | None:
            await store.put("k", b"again")
            return await store.get("k")

        deadline = time.monotonic() + 10
        while (back := await stored()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await store.redis.aclose()
        return down, elapsed, back

    down, elapsed, back = asyncio.run(main())

    assert down == [None, None]
    assert elapsed < 2.5  # refused connections: no wait for the 5 s timeout
    assert back == b"again"


def test_store_gives_up_on_a_hung_redis_within_its_timeout_then_skips_it(
    server: RedisServer,
) -> None:
    redis = server.process
    assert redis is not None

    async def main() -> tuple[bytes | None, float, float]:
        store = _store(server.url, retry=30, timeout=0.3)
        await store.put("k", b"answer")
        redis.signal(signal.SIGSTOP)  # up, but answering nothing
        started = time.perf_counter()
        first = await store.get("k")
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(20):
            await store.get("k")
        next_seconds = time.perf_counter() - started
        redis.signal(signal.SIGCONT)
        await store.redis.aclose()
        return first, first_seconds, next_seconds

    first, first_seconds, next_seconds = asyncio.run(main())

    assert first is None
    assert 0.3 <= first_seconds < 2.0  # the timeout, with room for a loaded machine
    assert next_seconds < 0.1  # not asked again within retry_seconds
