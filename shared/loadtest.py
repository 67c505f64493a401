"""`make load`: Locust, headless, against a running pattern; pass or fail against its SLO.

A pattern's locustfile.py declares its SLO with `enforce_slo(SLO(...))` and its users. This
module finds the locustfile and the pattern's published port, runs Locust, and writes an HTML
report to reports/<pattern>-load.html. Exit code 0 only when every SLO bound holds.

    python -m shared.loadtest web-single --users 32 --duration 30s

With --steps, a step load instead (qa_patterns/loading_test, the loading test kit): that many
users in turn, --duration each, and a chart of latency against load with the SLO on it:

    python -m shared.loadtest web-single --steps 4,8,16,32 --duration 10s
"""

import argparse
import logging
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.catalogue import REPO_ROOT, find
from shared.localmode import interpolate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SLO:
    p99_ms: float  # 99th percentile of response time, every request not named below
    max_error_rate: float  # failed requests / all requests
    min_rps: float  # requests per second over the run
    # Entries (Locust names) with a bound of their own, such as a job's time from submit to
    # result, which is not a request's and would otherwise hide inside the p99 of all of them.
    p99_ms_of: dict[str, float] = field(default_factory=dict)


def poisson_arrivals(rate: float) -> Any:
    """A Locust wait_time for about `rate` tasks a second per user, at random moments.

    Exponential waits (the arrivals of a Poisson process) rather than constant_throughput: users
    spawned together and paced alike fire in lockstep, all 32 at once, and the p99 measures that
    self-made burst instead of the service at the target rate.
    """

    def wait_time(user: Any) -> float:
        return random.expovariate(rate)

    return wait_time


def iris_row() -> list[float]:
    """A random iris row over the ranges of the dataset's four measurements (cm)."""
    return [
        round(random.uniform(4.3, 7.9), 1),
        round(random.uniform(2.0, 4.4), 1),
        round(random.uniform(1.0, 6.9), 1),
        round(random.uniform(0.1, 2.5), 1),
    ]


def slo_breaches(
    slo: SLO,
    p99_ms: float,
    error_rate: float,
    rps: float,
    p99_ms_of: dict[str, float] | None = None,
) -> list[str]:
    breaches = []
    if p99_ms > slo.p99_ms:
        breaches.append(f"p99 {p99_ms:.0f} ms > {slo.p99_ms:.0f} ms")
    for name, bound in slo.p99_ms_of.items():
        measured = (p99_ms_of or {}).get(name, 0.0)
        if measured > bound:
            breaches.append(f"{name} p99 {measured:.0f} ms > {bound:.0f} ms")
    if error_rate > slo.max_error_rate:
        breaches.append(f"error rate {error_rate:.2%} > {slo.max_error_rate:.2%}")
    if rps < slo.min_rps:
        breaches.append(f"throughput {rps:.0f} req/s < {slo.min_rps:.0f} req/s")
    return breaches


# The SLO the locustfile in this process declared, for tools that run beside it (a step load).
_declared: list[SLO] = []


def declared_slo() -> SLO | None:
    return _declared[-1] if _declared else None


def enforce_slo(slo: SLO) -> None:
    """Make the Locust run exit non-zero when the SLO is broken, and make --run-time count from
    the start of the run (call from a locustfile)."""
    _declared.append(slo)
    import gevent
    from locust import events
    from locust.stats import StatsEntry

    @events.init.add_listener  # type: ignore[untyped-decorator]
    def fresh_clock(**kwargs: Any) -> None:
        # gevent's timers count from the event loop's cached clock, which stood still while
        # Locust imported and read the locustfile: a start slower than --run-time would end the
        # run at once, with no request sent (seen on a loaded CI machine).
        gevent.get_hub().loop.update_now()

    @events.quitting.add_listener  # type: ignore[untyped-decorator]
    def check(environment: Any, **kwargs: Any) -> None:
        stats = environment.stats
        total = stats.total
        error_rate = total.num_failures / total.num_requests if total.num_requests else 1.0
        rest = StatsEntry(stats, "the rest", "")
        named: dict[str, float] = {}
        for entry in stats.entries.values():
            if entry.name in slo.p99_ms_of:
                named[entry.name] = entry.get_response_time_percentile(0.99) or 0.0
            else:
                rest.extend(entry)
        p99 = rest.get_response_time_percentile(0.99) or 0.0
        breaches = slo_breaches(slo, p99, error_rate, total.total_rps, named)
        verdict = "SLO met" if not breaches else "SLO broken: " + "; ".join(breaches)
        logger.warning(
            "%s (p99 %.0f ms%s, error rate %.2f%%, %.0f req/s over %d requests)",
            verdict,
            p99,
            "".join(f", {name} p99 {ms:.0f} ms" for name, ms in named.items()),
            error_rate * 100,
            total.total_rps,
            total.num_requests,
        )
        environment.process_exit_code = 1 if breaches else 0


def entry_url(folder: Path, port_offset: int = 0) -> str:
    """http://127.0.0.1:<published port> of the pattern's entry service (compose `ports`), read
    as `make run` reads it: with this environment's variables (WEB_SINGLE_PORT=8100) and offset."""
    services = yaml.safe_load((folder / "compose.yaml").read_text())["services"]
    for service in services.values():
        for spec in service.get("ports", []):
            published = int(interpolate(str(spec), os.environ).split(":")[-2])
            return f"http://127.0.0.1:{published + port_offset}"
    raise SystemExit(f"{folder}/compose.yaml publishes no port to load")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern")
    parser.add_argument("--host", help="base URL (default: the pattern's published port)")
    parser.add_argument("--port-offset", type=int, default=0, help="as given to make run")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--duration", default="30s", help="the run's, or each step's")
    parser.add_argument("--steps", help="a step load: users of each step, 4,8,16,32")
    args = parser.parse_args()
    entry = find(args.pattern)
    if entry is None or not (entry.path / "locustfile.py").exists():
        raise SystemExit(f"no locustfile for PATTERN={args.pattern}")
    if args.steps:
        from qa_patterns.loading_test.kit import step_load_main

        return step_load_main(entry, args.host or entry_url(entry.path, args.port_offset), args)
    report = REPO_ROOT / "reports" / f"{entry.slug}-load.html"
    report.parent.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(entry.path / "locustfile.py"),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.users),
        "--run-time",
        args.duration,
        "--host",
        args.host or entry_url(entry.path, args.port_offset),
        "--html",
        str(report),
        "--only-summary",
    ]
    code = subprocess.call(command, cwd=REPO_ROOT)
    print(f"report: {report.relative_to(REPO_ROOT)}")  # noqa: T201
    return code


if __name__ == "__main__":
    sys.exit(main())
