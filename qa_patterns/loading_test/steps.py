"""A step load for any locustfile: Locust loads this file beside the pattern's own
(`-f locustfile.py,steps.py`), runs LOADTEST_STEPS users (4,8,16,32), each count for
LOADTEST_STEP_SECONDS, and writes each step's figures to LOADTEST_STEPS_OUT (JSON).

The figures are counted here, per step, from every request's own response time, rather than
read from Locust's stats history, whose percentiles are over a sliding 10 s window and so mix
one step's latencies into the next one's. The first quarter of each step (at most 1 s) is left
out: the users just spawned and the queue they build are the step before's story.
"""

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events

from shared import loadtest

USERS = [int(count) for count in os.environ.get("LOADTEST_STEPS", "1").split(",")]
STEP_SECONDS = float(os.environ.get("LOADTEST_STEP_SECONDS", "10"))
WARMUP_SECONDS = min(1.0, STEP_SECONDS / 4)


class StepLoad(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // STEP_SECONDS)  # type: ignore[no-untyped-call]
        if step >= len(USERS):
            return None
        return USERS[step], 1000.0  # every new user of a step at once


class Recorder:
    """Each step's response times (ms) by request name, its failures and status codes."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.failures = [0] * len(USERS)
        self.by_name: list[dict[str, list[float]]] = [{} for _ in USERS]
        self.statuses: list[dict[str, int]] = [{} for _ in USERS]

    def record(self, name: str, response_time: float, exception: Any, status: int) -> None:
        elapsed = time.perf_counter() - self.started
        step = int(elapsed // STEP_SECONDS)
        if step >= len(USERS) or elapsed - step * STEP_SECONDS < WARMUP_SECONDS:
            return
        self.by_name[step].setdefault(name, []).append(response_time)
        key = str(status)
        self.statuses[step][key] = self.statuses[step].get(key, 0) + 1
        if exception is not None:
            self.failures[step] += 1

    def figures(self) -> dict[str, Any]:
        slo = loadtest.declared_slo()
        counted = STEP_SECONDS - WARMUP_SECONDS
        steps = []
        own = slo.p99_ms_of if slo is not None else {}
        for index, users in enumerate(USERS):
            by_name = {name: sorted(values) for name, values in sorted(self.by_name[index].items())}
            # As enforce_slo judges a run: an entry with a bound of its own (a job's time from
            # submit to result) by that bound, every other request by the common p99.
            times = sorted(t for name, values in by_name.items() if name not in own for t in values)
            requests = sum(len(values) for values in by_name.values())
            error_rate = self.failures[index] / requests if requests else 1.0
            p99 = percentile(times, 0.99)
            p99_by_name = {name: percentile(values, 0.99) for name, values in by_name.items()}
            meets = slo is None or (
                p99 <= slo.p99_ms
                and error_rate <= slo.max_error_rate
                and all(p99_by_name.get(name, 0.0) <= bound for name, bound in own.items())
            )
            steps.append(
                {
                    "users": users,
                    "requests": requests,
                    "failures": self.failures[index],
                    "error_rate": error_rate,
                    "rps": requests / counted,
                    "p50_ms": percentile(times, 0.50),
                    "p90_ms": percentile(times, 0.90),
                    "p99_ms": p99,
                    "status_codes": self.statuses[index],
                    "p99_ms_by_name": p99_by_name,
                    "meets_slo": meets,
                }
            )
        return {
            "step_seconds": STEP_SECONDS,
            "warmup_seconds": WARMUP_SECONDS,
            "slo": None if slo is None else dataclasses.asdict(slo),
            "steps": steps,
        }


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank: the smallest time at least `fraction` of the requests took no longer than."""
    if not ordered:
        return 0.0
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1
    return ordered[rank]


recorder = Recorder()


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def start_clock(**kwargs: Any) -> None:
    recorder.started = time.perf_counter()


@events.request.add_listener  # type: ignore[untyped-decorator]
def record(
    name: str, response_time: float, exception: Any, response: Any = None, **kwargs: Any
) -> None:
    status = getattr(response, "status_code", 0) or 0
    recorder.record(name, response_time, exception, status)


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def write(**kwargs: Any) -> None:
    out = os.environ.get("LOADTEST_STEPS_OUT")
    if out:
        Path(out).write_text(json.dumps(recorder.figures(), indent=2))
