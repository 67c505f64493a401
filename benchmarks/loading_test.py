"""Loading test: the kit's full runs against web single's service, one uvicorn worker and two,
started from qa_patterns/loading_test/compose.yaml through local mode.

- workers: the same step load (1 to 64 closed-loop users, 10 s a step, every request one
  100-row body made once, so that the target's CPU sets the pace) on 1 worker, then on 2;
  reports/loading-test-workers.png draws both with the SLO line.
- generator: 32 users of locustfile.py's mix for 20 s, with HttpUser, FastHttpUser, and
  FastHttpUser over two Locust processes: Locust's CPU against the target's, per request.

No target to meet: the figures are the README's (Load test and figures), with the load average.
"""

import os

from qa_patterns.loading_test.kit import compare_generators, compare_workers
from shared.localmode import REPO_ROOT
from shared.testing import pattern_running

PATTERN = REPO_ROOT / "qa_patterns" / "loading_test"
STEPS = [1, 2, 4, 8, 16, 32, 64]


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> bool:
    with pattern_running(PATTERN, LOADING_TEST_MULTI_WORKERS="2") as pattern:
        print(load())  # noqa: T201
        compare_workers(pattern.url("single"), pattern.url("multi"), STEPS, 10.0, 2, 100)
        print(load())  # noqa: T201
        compare_generators(pattern.url("multi"), 32, 20.0, [("http", 1), ("fast", 1), ("fast", 2)])
        print(load())  # noqa: T201
    print("charts: reports/loading-test-workers.png, reports/loading-test-generator.png")  # noqa: T201
    return True
