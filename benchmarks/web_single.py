"""Web single POST /predict (one row) against a bare FastAPI endpoint returning a constant.

Both run as one uvicorn worker with the same flags; wrk holds 32 connections. The rounds
alternate between the two so that drift in the machine's speed hits both alike; the median
round counts. Target (issue 2): predict throughput >= 0.75 x the constant's, predict p99 <= 10 ms.
"""

import statistics
import time

from benchmarks.wrk import Result, answers, post, uvicorn
from shared.localmode import REPO_ROOT, free_port
from shared.testing import pattern_running, wait_until

ROUNDS = 3
SECONDS = 10
BODY = '{"data": [[5.1, 3.5, 1.4, 0.2]]}'


def main() -> bool:
    port = free_port()
    baseline = uvicorn("benchmarks.constant_app:app", port)
    constant_url = f"http://127.0.0.1:{port}/predict"
    try:
        with pattern_running(REPO_ROOT / "serving_patterns" / "web_single") as pattern:
            predict_url = f"{pattern.url('api')}/predict"
            wait_until(
                lambda: answers(constant_url, BODY, 200), timeout=30, what="the constant app"
            )
            runs: dict[str, list[Result]] = {"constant": [], "predict": []}
            for _ in range(ROUNDS):
                for name, url in (("constant", constant_url), ("predict", predict_url)):
                    post(url, BODY, seconds=2)  # warm-up
                    runs[name].append(post(url, BODY, seconds=SECONDS))
                    time.sleep(1)
    finally:
        baseline.terminate()
        baseline.wait()

    med = {name: statistics.median(r.rps for r in results) for name, results in runs.items()}
    p99 = {name: statistics.median(r.p99_ms for r in results) for name, results in runs.items()}
    errors = sum(r.errors for results in runs.values() for r in results)
    ratio = med["predict"] / med["constant"]
    print(f"{'endpoint':<34}{'req/s':>10}{'p99 ms':>10}")
    print(f"{'bare FastAPI, constant JSON':<34}{med['constant']:>10.0f}{p99['constant']:>10.2f}")
    print(f"{'web single /predict, one row':<34}{med['predict']:>10.0f}{p99['predict']:>10.2f}")
    met = ratio >= 0.75 and p99["predict"] <= 10 and errors == 0
    print(
        f"ratio {ratio:.2f} (target >= 0.75), predict p99 {p99['predict']:.2f} ms (target <= 10), "
        f"errors {errors}: {'MET' if met else 'NOT MET'}"
    )
    print(f"({ROUNDS} alternating rounds of {SECONDS}s, median; wrk -t2 -c32)")
    return met
