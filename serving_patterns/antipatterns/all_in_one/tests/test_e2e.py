"""End to end: the monolith and the split design from compose.yaml through local mode, side by
side, through the same events: model A's process killed, model A redeployed. Model B is asked
all the while."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx2
import pytest

from serving_patterns.antipatterns.all_in_one.proxy import SEVEN
from shared.testing import pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]

pytestmark = pytest.mark.e2e


def ask_b(base: str) -> int | str:
    """Model B's answer through `base` (the monolith or the proxy): its status, or the error."""
    try:
        response = httpx2.post(f"{base}/b/predict", json={"data": [SEVEN]}, timeout=5)
    except httpx2.HTTPError as exc:
        return type(exc).__name__
    return response.status_code


@contextmanager
def asking_b(base: str) -> Iterator[list[int | str]]:
    """Model B asked over and over, in a thread, while the block runs: every answer, in order."""
    answers: list[int | str] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            answers.append(ask_b(base))
            done.wait(0.02)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    try:
        wait_until(lambda: answers, timeout=10, what=f"a first answer of B at {base}")
        yield answers
    finally:
        done.set()
        thread.join(timeout=10)


def asked(answers: list[int | str], times: int) -> bool:
    return len(answers) >= times


def a_answers(base: str) -> bool:
    """Whether model A answers through `base`."""
    try:
        response = httpx2.post(f"{base}/a/predict", json={"data": [SETOSA]}, timeout=5)
    except httpx2.HTTPError:
        return False
    return response.status_code == 200


def test_a_crash_of_model_a_takes_b_down_in_the_monolith_and_not_in_the_split_design() -> None:
    with pattern_running(PATTERN) as pattern:
        monolith, proxy = pattern.url("monolith"), pattern.url("proxy")
        before = ask_b(monolith), ask_b(proxy)

        # The process serving model A dies with SIGKILL (the OOM killer, a segfault in A's
        # native code): in the monolith that process is B's server too.
        pattern.kill("monolith")
        pattern.kill("a")
        monolith_b, split_b = ask_b(monolith), ask_b(proxy)
        split_a = httpx2.post(f"{proxy}/a/predict", json={"data": [SETOSA]}, timeout=5)
        ready = httpx2.get(f"{proxy}/ready", timeout=5)

    assert before == (200, 200)
    assert monolith_b == "ConnectError"  # B is gone with A
    assert split_b == 200  # B's own process never noticed
    assert split_a.status_code == 503  # A's outage is A's alone, and says so
    assert split_a.json()["detail"] == "model a is unreachable (ConnectError)"
    assert ready.status_code == 200


def test_a_redeploy_of_model_a_interrupts_b_in_the_monolith_and_not_in_the_split_design() -> None:
    seen: dict[str, list[int | str]] = {}
    with pattern_running(PATTERN) as pattern:
        b_process = pattern.processes["b"][0]
        designs = {  # the service a new model A is deployed to, its model setting, the entry
            "monolith": ("monolith", "ALL_IN_ONE_MONOLITH_MODEL_DIR", pattern.url("monolith")),
            "split": ("a", "ALL_IN_ONE_A_MODEL_DIR", pattern.url("proxy")),
        }
        versions = {}
        for design, (service, setting, base) in designs.items():
            with asking_b(base) as answers:
                # A new version of A (the iris forest for the iris linear model): the old
                # process stops as an orchestrator stops it, and the new one starts.
                pattern.kill(service, sig=signal.SIGTERM)
                pattern.start_replica(service, **{setting: "models/iris_forest"})
                pattern.wait_healthy(service, len(pattern.processes[service]) - 1)
                wait_until(partial(a_answers, base), timeout=30, what=f"A at {base}")
                # A few more answers of B after A's redeploy, so a late failure would show.
                wanted = len(answers) + 5
                wait_until(partial(asked, answers, wanted), timeout=30, what="B asked again")
            seen[design] = list(answers)
            card = f"{pattern.url(service)}{'/a' if design == 'monolith' else ''}/metadata"
            versions[design] = httpx2.get(card, timeout=5).json()["model_name"]
        b_alive = b_process.alive() and pattern.processes["b"] == [b_process]

    monolith, split = seen["monolith"], seen["split"]
    assert versions == {"monolith": "iris-forest", "split": "iris-forest"}  # A's new model
    # The monolith: B answered before, not while its process restarted for A, then again.
    assert monolith[0] == 200 and monolith[-1] == 200
    assert any(answer != 200 for answer in monolith), monolith
    # The split design: B answered every time, from the same process it started with.
    assert set(split) == {200}, split
    assert b_alive
