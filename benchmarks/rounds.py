"""Rounds of load over several targets in alternating order, and their medians.

Each round loads every target in turn, the order reversed every other round (ABC CBA ...), so
that drift in the machine's speed hits all alike; each load is preceded by a 2 s warm-up. Besides
the load generator's figures, the CPU time per request of the process serving each target: on a
machine shared with other work, requests/s measures the share of the CPU the server got as much
as the server, its CPU time per request much less so.
"""

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from benchmarks.wrk import Result, cpu_seconds


@dataclass(frozen=True)
class Medians:
    rps: dict[str, float]
    p99_ms: dict[str, float]
    cpu_us: dict[str, float]  # per request, of the serving process
    errors: dict[str, int]  # non-2xx answers and socket errors over every round
    load_before: float  # the 1-minute load average
    load_after: float


def interleaved(
    loads: Mapping[str, Callable[[int], Result]],
    pids: Mapping[str, int],
    rounds: int,
    seconds: int,
) -> Medians:
    """loads: name -> run the load for that many seconds; pids: name -> the serving process."""
    runs: dict[str, list[Result]] = {name: [] for name in loads}
    cpu_us: dict[str, list[float]] = {name: [] for name in loads}
    load_before = os.getloadavg()[0]
    for round_ in range(rounds):
        for name in list(loads)[:: 1 if round_ % 2 == 0 else -1]:
            loads[name](2)  # warm-up
            used = cpu_seconds(pids[name])
            result = loads[name](seconds)
            used = cpu_seconds(pids[name]) - used
            runs[name].append(result)
            cpu_us[name].append(used / max(result.requests, 1) * 1e6)
            time.sleep(1)
    return Medians(
        rps={name: statistics.median(r.rps for r in results) for name, results in runs.items()},
        p99_ms={
            name: statistics.median(r.p99_ms for r in results) for name, results in runs.items()
        },
        cpu_us={name: statistics.median(values) for name, values in cpu_us.items()},
        errors={name: sum(r.errors for r in results) for name, results in runs.items()},
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
