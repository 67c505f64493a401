"""Web single POST /predict (one row): the pattern, the same service with /predict routed two
other ways (benchmarks.route_variants), and a bare FastAPI endpoint returning a constant.

Each runs as one uvicorn worker with the command the pattern's image runs (--factory, --http
shared.server:Protocol, no access log); wrk holds 32 connections. The rounds go through the
servers in turn, the order reversed every other round (ABC CBA ...), so that drift in the
machine's speed hits all alike; the median round counts. Besides wrk's figures, each server's
CPU time per request: on a machine shared with other work, requests/s measures the share of
the CPU the server got as much as the server, its CPU time per request much less so.

Targets (issue 2): predict throughput >= 0.75 x the constant's, predict p99 <= 10 ms. The
ordinary route would replace the hot one within 5% of its requests/s (issue 7; CONTRIBUTING.md,
"Model server routes").
"""

from dataclasses import dataclass
from functools import partial

from benchmarks.rounds import interleaved
from benchmarks.wrk import Result, answers, post, uvicorn
from shared.localmode import free_port
from shared.testing import wait_until

ROUNDS = 5
SECONDS = 8
BODY = '{"data": [[5.1, 3.5, 1.4, 0.2]]}'


@dataclass(frozen=True)
class Server:
    label: str
    app: str
    factory: bool = True


SERVERS = {
    "constant": Server("bare FastAPI, constant JSON", "benchmarks.constant_app:app", False),
    "predict": Server(
        "web single /predict (hot route)", "serving_patterns.web_single.app:create_app"
    ),
    "ordinary": Server("  ordinary @app.post route", "benchmarks.route_variants:ordinary"),
    "pydantic": Server("  pydantic body parameter", "benchmarks.route_variants:pydantic"),
}


def main() -> bool:
    procs, urls = {}, {}
    try:
        for name, server in SERVERS.items():
            port = free_port()
            procs[name] = uvicorn(server.app, port, factory=server.factory)
            urls[name] = f"http://127.0.0.1:{port}/predict"
        for name, url in urls.items():
            wait_until(partial(answers, url, BODY, 200), timeout=60, what=name)
        loads = {name: partial(_post, url) for name, url in urls.items()}
        pids = {name: proc.pid for name, proc in procs.items()}
        medians = interleaved(loads, pids, ROUNDS, SECONDS)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait()

    med, p99, cpu, errors = (
        medians.rps,
        medians.p99_ms,
        medians.cpu_us,
        sum(medians.errors.values()),
    )
    print(f"{'endpoint':<36}{'req/s':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'vs hot':>8}")
    for name, server in SERVERS.items():
        versus = f"{med[name] / med['predict']:.2f}" if name in ("ordinary", "pydantic") else ""
        print(f"{server.label:<36}{med[name]:>9.0f}{p99[name]:>9.2f}{cpu[name]:>12.0f}{versus:>8}")
    ratio = med["predict"] / med["constant"]
    met = ratio >= 0.75 and p99["predict"] <= 10 and errors == 0
    print(
        f"ratio {ratio:.2f} (target >= 0.75), predict p99 {p99['predict']:.2f} ms (target <= 10), "
        f"errors {errors}: {'MET' if met else 'NOT MET'}"
    )
    print(
        f"({ROUNDS} rounds of {SECONDS}s in alternating order, median; wrk -t2 -c32; "
        f"load average {medians.load_before:.1f} before, {medians.load_after:.1f} after)"
    )
    return met


def _post(url: str, seconds: int) -> Result:
    return post(url, BODY, seconds=seconds)
