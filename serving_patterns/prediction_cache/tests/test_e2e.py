"""End to end: proxy, predictor and a private redis-server started from compose.yaml through local
mode, over HTTP. The predictor's own request counter (its GET /metrics) says whether a request
reached it; Redis is read directly to see what the cache holds."""

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis

from serving_patterns.prediction_cache.cache import cache_key
from shared.testing import REPO_ROOT, LocalPattern, pattern_running, requests_counted, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
PREFIX = "prediction-cache"  # the default key prefix

pytestmark = pytest.mark.e2e


def predict(p: LocalPattern, rows: list[list[float]], **kwargs: Any) -> httpx2.Response:
    return httpx2.post(f"{p.url('proxy')}/predict", json={"data": rows}, timeout=10, **kwargs)


def predictor_calls(p: LocalPattern) -> float:
    """POST /predict requests the predictor has answered: its own count, from its /metrics."""
    metrics = httpx2.get(f"{p.url('predictor')}/metrics").text
    return requests_counted(metrics, service="prediction-cache-predictor", route="/predict")


def store(p: LocalPattern) -> redis.Redis:
    return redis.Redis.from_url(p.service_url("redis"))


def timed(p: LocalPattern, rows: list[list[float]]) -> tuple[httpx2.Response, float]:
    started = time.perf_counter()
    response = predict(p, rows)
    return response, time.perf_counter() - started


def test_repeat_input_is_answered_from_the_cache_without_calling_the_predictor() -> None:
    delay = 1.0  # a slow model, so that the time a hit saves shows (on a loaded machine too)
    slow = {"PREDICTION_CACHE_PREDICTOR_DELAY_SECONDS": str(delay)}
    with pattern_running(PATTERN, **slow, PREDICTION_CACHE_PROXY_TIMEOUT_SECONDS="5") as p:
        first, first_seconds = timed(p, [SETOSA])
        calls_after_first = predictor_calls(p)
        second, second_seconds = timed(p, [SETOSA])
        # The same numbers written otherwise are the same input.
        respelled = httpx2.post(
            f"{p.url('proxy')}/predict",
            content=b'{"data":[[5.10, 35e-1, 1.4, 0.20]]}',
            headers={"content-type": "application/json", "X-Request-ID": "respelled-1"},
        )
        calls_after_repeats = predictor_calls(p)
        other = predict(p, [VIRGINICA])
        calls_after_other = predictor_calls(p)
        ttl_ms = store(p).pttl(cache_key(PREFIX, "1.0.0", [SETOSA]))

    assert first.status_code == second.status_code == respelled.status_code == 200
    assert first.json()["cache"] == "miss"
    assert second.json()["cache"] == respelled.json()["cache"] == "hit"
    assert calls_after_first == calls_after_repeats == 1  # the hits never reached it
    # Identical to the first answer, but for the id of the request it answers.
    for hit in (second, respelled):
        assert hit.json()["predictions"] == first.json()["predictions"]
        assert hit.json()["model_version"] == first.json()["model_version"] == "1.0.0"
    assert respelled.json()["request_id"] == "respelled-1"
    assert first_seconds >= delay > second_seconds
    assert other.json()["cache"] == "miss"  # a different input misses
    assert other.json()["predictions"][0]["label"] == "virginica"
    assert calls_after_other == 2
    assert 0 < ttl_ms <= 3600 * 1000  # stored with the configured TTL


def test_concurrent_identical_misses_call_the_predictor_once() -> None:
    with pattern_running(PATTERN, PREDICTION_CACHE_PREDICTOR_DELAY_SECONDS="0.5") as p:
        url = f"{p.url('proxy')}/predict"

        async def burst() -> list[httpx2.Response]:
            async with httpx2.AsyncClient(timeout=10) as client:
                return await asyncio.gather(
                    *(client.post(url, json={"data": [SETOSA]}) for _ in range(20))
                )

        answers = asyncio.run(burst())
        calls = predictor_calls(p)

    assert [a.status_code for a in answers] == [200] * 20
    assert calls == 1
    assert len({json.dumps(a.json()["predictions"]) for a in answers}) == 1
    assert len({a.json()["request_id"] for a in answers}) == 20  # each its own id


def test_after_the_ttl_the_input_is_recomputed() -> None:
    with pattern_running(PATTERN, PREDICTION_CACHE_PROXY_TTL_SECONDS="1") as p:
        key = cache_key(PREFIX, "1.0.0", [SETOSA])
        caches = [predict(p, [SETOSA]).json()["cache"], predict(p, [SETOSA]).json()["cache"]]
        wait_until(lambda: not store(p).exists(key), timeout=10, what="the entry to expire")
        after_ttl = predict(p, [SETOSA]).json()["cache"]
        calls = predictor_calls(p)

    assert caches == ["miss", "hit"]
    assert after_ttl == "miss"
    assert calls == 2


def test_when_redis_is_full_the_least_recently_used_predictions_are_evicted_and_recomputed() -> (
    None
):
    with pattern_running(PATTERN, PREDICTION_CACHE_REDIS_MAXMEMORY="2mb") as p:
        config = store(p).config_get("maxmemory*")
        key = cache_key(PREFIX, "1.0.0", [SETOSA])
        assert predict(p, [SETOSA]).json()["cache"] == "miss"
        filled = 0
        # Other inputs, 50 rows each, until Redis has made room by evicting the oldest entry.
        while store(p).exists(key) and filled < 2000:
            rows = [[4.0 + filled / 1000, 3.0, 1.0 + i / 100, 0.2] for i in range(50)]
            assert predict(p, rows).status_code == 200
            filled += 1
        evicted = store(p).info("stats")["evicted_keys"]
        calls_before = predictor_calls(p)
        again = predict(p, [SETOSA]).json()["cache"]
        calls_after = predictor_calls(p)

    assert config["maxmemory"] == str(2 * 1024 * 1024)
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert filled < 2000, "the entry was never evicted"
    assert evicted > 0
    assert again == "miss"
    assert calls_after == calls_before + 1


def test_redis_down_gives_uncached_answers_and_caching_resumes_when_it_is_back() -> None:
    with pattern_running(PATTERN, PREDICTION_CACHE_PROXY_REDIS_RETRY_SECONDS="0.5") as p:
        assert [predict(p, [SETOSA]).json()["cache"] for _ in range(2)] == ["miss", "hit"]
        p.stop_infrastructure("redis")
        calls_before = predictor_calls(p)
        down = [timed(p, [SETOSA]) for _ in range(3)]
        calls_while_down = predictor_calls(p) - calls_before
        p.restart_infrastructure("redis")  # same port, empty: a cache keeps nothing on disk

        def cached_again() -> bool:
            answers = [predict(p, [SETOSA]).json()["cache"] for _ in range(2)]
            return answers == ["miss", "hit"] or answers == ["hit", "hit"]

        wait_until(cached_again, timeout=15, what="caching to resume")

    for response, seconds in down:
        assert response.status_code == 200
        assert response.json()["cache"] == "miss"
        assert response.json()["predictions"][0]["label"] == "setosa"
        assert seconds < 2.0  # Redis refuses at once: no waiting on it
    assert calls_while_down == 3  # every one predicted, uncached


def test_a_new_model_version_never_serves_the_old_versions_answer(tmp_path: Path) -> None:
    # The same model under a new version: only the key can tell its answers from the old ones.
    new_model = tmp_path / "iris-2"
    shutil.copytree(REPO_ROOT / "models" / "iris", new_model)
    card = json.loads((new_model / "model.json").read_text())
    (new_model / "model.json").write_text(json.dumps({**card, "version": "2.0.0"}))

    with pattern_running(PATTERN, PREDICTION_CACHE_PROXY_VERSION_REFRESH_SECONDS="0.2") as p:
        old = [predict(p, [SETOSA]).json() for _ in range(2)]
        p.kill("predictor")  # the redeploy: the old predictor goes, the new one comes
        p.start_replica("predictor", PREDICTION_CACHE_PREDICTOR_MODEL_DIR=str(new_model))
        p.wait_healthy("predictor", 1)
        answers = [predict(p, [SETOSA]).json()]
        # Until the proxy has read the new version (0.2 s here) hits answer for the old one.
        while answers[-1]["model_version"] == "1.0.0" and len(answers) < 200:
            time.sleep(0.05)
            answers.append(predict(p, [SETOSA]).json())
        later = [predict(p, [SETOSA]).json() for _ in range(3)]
        new_calls = predictor_calls(p)
        old_entry = store(p).exists(cache_key(PREFIX, "1.0.0", [SETOSA]))

    assert [a["cache"] for a in old] == ["miss", "hit"]
    assert answers[-1]["model_version"] == "2.0.0"
    assert answers[-1]["cache"] == "miss"  # the old answer, still in Redis, was not served
    assert [(a["model_version"], a["cache"]) for a in later] == [("2.0.0", "hit")] * 3
    assert new_calls == 1
    assert old_entry  # still there until its TTL, never read again


def test_parallel_mode_returns_a_hit_before_a_slow_prediction_finishes() -> None:
    delay = 1.5
    with pattern_running(
        PATTERN,
        PREDICTION_CACHE_PROXY_MODE="parallel",
        PREDICTION_CACHE_PROXY_TIMEOUT_SECONDS="5",
        PREDICTION_CACHE_PREDICTOR_DELAY_SECONDS=str(delay),
    ) as p:
        miss, miss_seconds = timed(p, [SETOSA])
        hit, hit_seconds = timed(p, [SETOSA])

    assert miss.json()["cache"] == "miss"
    assert miss_seconds >= delay
    assert hit.json()["cache"] == "hit"
    assert hit.json()["predictions"] == miss.json()["predictions"]
    assert hit_seconds < delay - 0.5  # did not wait for the prediction racing it


def test_input_the_model_cannot_take_is_refused_and_never_cached() -> None:
    with pattern_running(PATTERN, PREDICTION_CACHE_PROXY_MAX_ROWS="5") as p:
        wrong_width = [predict(p, [[5.1, 3.5, 1.4]]) for _ in range(2)]
        too_many = predict(p, [SETOSA] * 6)
        not_numbers = httpx2.post(f"{p.url('proxy')}/predict", json={"data": [["a", 1, 2, 3]]})
        calls = predictor_calls(p)
        keys = store(p).keys(f"{PREFIX}:*")

    for refused in wrong_width:  # the predictor's reason, passed on; asked each time
        assert refused.status_code == 422
        assert "expected 4 features" in refused.text
    assert calls == 2
    assert too_many.status_code == 422
    assert "at most 5 rows per request, got 6" in too_many.text
    assert not_numbers.status_code == 422
    assert keys == []


def test_predictor_down_cached_inputs_are_still_answered_and_others_get_503() -> None:
    with pattern_running(PATTERN, PREDICTION_CACHE_PROXY_TIMEOUT_SECONDS="5") as p:
        assert predict(p, [SETOSA]).json()["cache"] == "miss"
        p.kill("predictor")
        cached = predict(p, [SETOSA])
        uncached, seconds = timed(p, [VIRGINICA])
        ready = httpx2.get(f"{p.url('proxy')}/ready")

    assert cached.status_code == 200
    assert cached.json()["cache"] == "hit"  # the cache covers the outage for what it holds
    assert uncached.status_code == 503
    assert uncached.json()["detail"] == "the predictor is unreachable (ConnectError)"
    assert uncached.headers["retry-after"] == "1"
    assert seconds < 2.5  # refused at once, not after the 5 s timeout
    assert ready.status_code == 503
    assert "predictor" in ready.json()["reasons"]


def test_an_unreadable_cache_entry_is_a_miss_and_is_replaced() -> None:
    with pattern_running(PATTERN) as p:  # up: the proxy knows the model version
        store(p).set(cache_key(PREFIX, "1.0.0", [SETOSA]), b"not an answer")
        caches = [predict(p, [SETOSA]) for _ in range(2)]

    assert [c.status_code for c in caches] == [200, 200]
    assert [c.json()["cache"] for c in caches] == ["miss", "hit"]
