"""Prediction cache: the latency of a hit against a miss, in the same run of the same pattern.

The pattern runs from its compose file through local mode with its defaults (sequential mode,
no artificial predictor delay: a miss costs the one-row ONNX model's real time, not a sleep).
Rounds alternate, on the same processes:

- hits: wrk POSTs one body, asked once before, so every request is answered from Redis (the
  predictor's own request counter is read before and after: it must not move);
- misses: wrk's `request` function makes every body new (the first feature steps by 1e-6, a
  new float32 value each time), and the cache is emptied first, so every request misses: a
  lookup, the predictor's call and the store.

Target (issue): hit p50 at most half of the miss p50.
"""

import statistics

import httpx2
import redis

from benchmarks.wrk import Result, post
from shared.localmode import REPO_ROOT
from shared.testing import pattern_running, requests_counted, wait_until

PATTERN = REPO_ROOT / "serving_patterns" / "prediction_cache"
SECONDS, ROUNDS, CONNECTIONS = 5, 3, 4
BODY = '{"data": [[5.1, 3.5, 1.4, 0.2]]}'
# Every request a new input: one wrk thread, so one counter gives each request its own value.
NEW_INPUT_EACH_REQUEST = """
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil,
    string.format('{"data": [[%.6f, 3.5, 1.4, 0.2]]}', 4 + n / 1000000))
end
"""
TARGET_RATIO = 0.5


def _predictor_calls(url: str) -> float:
    metrics = httpx2.get(f"{url}/metrics").text
    return requests_counted(metrics, service="prediction-cache-predictor", route="/predict")


def _ask(proxy: str) -> str:
    """Send BODY once: the cache's answer to it, hit or miss."""
    headers = {"content-type": "application/json"}
    return str(httpx2.post(f"{proxy}/predict", content=BODY, headers=headers).json()["cache"])


def main() -> bool:
    with pattern_running(
        PATTERN,
        PREDICTION_CACHE_PROXY_LOG_LEVEL="WARNING",
        PREDICTION_CACHE_PREDICTOR_LOG_LEVEL="WARNING",
    ) as pattern:
        proxy, predictor = pattern.url("proxy"), pattern.url("predictor")
        cache = redis.Redis.from_url(pattern.service_url("redis"))
        wait_until(lambda: httpx2.get(f"{proxy}/ready").status_code == 200)
        assert _ask(proxy) == "miss"  # now stored: the hit rounds ask it again and again
        hits: list[Result] = []
        misses: list[Result] = []
        predictor_calls_in_hit_rounds = 0.0
        for _ in range(ROUNDS):
            before = _predictor_calls(predictor)
            hits.append(post(f"{proxy}/predict", BODY, CONNECTIONS, SECONDS, threads=1))
            predictor_calls_in_hit_rounds += _predictor_calls(predictor) - before
            cache.flushall()  # so that no new input of this round was stored by the last one
            before = _predictor_calls(predictor)
            misses.append(
                post(
                    f"{proxy}/predict",
                    BODY,
                    CONNECTIONS,
                    SECONDS,
                    threads=1,
                    extra_lua=NEW_INPUT_EACH_REQUEST,
                )
            )
            miss_calls = _predictor_calls(predictor) - before
            assert miss_calls >= misses[-1].requests, "a miss round request was answered cached"
            assert _ask(proxy) == "miss"  # stored again for the next hit round

    print(f"{'requests':<10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    medians = {}
    for name, results in (("hit", hits), ("miss", misses)):
        p50 = statistics.median(r.p50_ms for r in results)
        p99 = statistics.median(r.p99_ms for r in results)
        rps = statistics.median(r.rps for r in results)
        errors = sum(r.errors for r in results)
        medians[name] = (p50, errors)
        print(f"{name:<10}{rps:>8.0f}{p50:>9.2f}{p99:>9.2f}{errors:>8}")
    (hit_p50, hit_errors), (miss_p50, miss_errors) = medians["hit"], medians["miss"]
    ratio = hit_p50 / miss_p50
    met = ratio <= TARGET_RATIO and hit_errors == miss_errors == 0
    met = met and predictor_calls_in_hit_rounds == 0
    print(f"predictor calls during the hit rounds: {predictor_calls_in_hit_rounds:.0f}")
    print(
        f"hit p50 {hit_p50:.2f} ms = {ratio:.2f} x miss p50 {miss_p50:.2f} ms "
        f"(target <= {TARGET_RATIO}): {'MET' if met else 'NOT MET'}"
    )
    print(
        f"({ROUNDS} rounds of {SECONDS}s each, hits and misses alternating, median; wrk -t1 "
        f"-c{CONNECTIONS}; one-row requests; sequential mode, no predictor delay)"
    )
    return met
