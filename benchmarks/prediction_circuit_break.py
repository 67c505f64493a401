"""Prediction circuit break: at 3x the load the limit admits, admitted requests keep their latency,
rejections are immediate, and the predictor has no errors. For proxy.py and for nginx.

The pattern runs from its compose file through local mode (the nginx profile too, when the
machine has nginx), with a predictor that takes DELAY seconds a call and a limit of LIMIT
predictions at once: it admits LIMIT / DELAY requests/s. For each proxy:

- unloaded: one request at a time, REQUESTS of them: the admitted latency with nothing else
  going on;
- 3x: an open loop (requests sent on a fixed schedule, whatever the answers: what a crowd of
  clients does, unlike wrk's closed loop, where a rejected client at once asks again) at 3x
  LIMIT / DELAY requests/s for SECONDS, over pre-opened keep-alive connections. Each answer's
  time is its own, from the request's write to its last byte, so admitted (200) and rejected
  (503) requests are measured apart (wrk gives one distribution for both).

The predictor's own /metrics count its calls and its 5xx. Targets (issue 9): admitted p99 at
most 2x the unloaded p99, rejections' p99 under 2 ms, no predictor errors.
"""

import asyncio
import os
import re
import statistics
import time
from dataclasses import dataclass

import httpx2

from shared.localmode import REPO_ROOT, nginx_binary
from shared.testing import pattern_running, requests_counted

PATTERN = REPO_ROOT / "serving_patterns" / "prediction_circuit_break"
DELAY, LIMIT = 0.1, 8
SECONDS, REQUESTS, CONNECTIONS = 10, 100, 64
BODY = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
ADMITTED_RATIO, REJECTED_P99_MS = 2.0, 2.0

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def exchange(connection: Connection) -> tuple[int, float]:
    """One request on a keep-alive connection: its status and its seconds."""
    reader, writer = connection
    started = time.perf_counter()
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    length = LENGTH.search(head)
    await reader.readexactly(int(length[1]) if length else 0)
    return int(head[9:12]), time.perf_counter() - started


async def connections(port: int, n: int) -> list[Connection]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def unloaded(port: int) -> list[tuple[int, float]]:
    (connection,) = await connections(port, 1)
    try:
        return [await exchange(connection) for _ in range(REQUESTS)]
    finally:
        connection[1].close()


async def open_loop(port: int, rate: float, seconds: float) -> list[tuple[int, float]]:
    """Requests at `rate` per second on schedule, each on an idle connection (a new one when
    all are busy): every answer's status and time."""
    idle = await connections(port, CONNECTIONS)
    opened = list(idle)  # to close at the end (a connection may be listed twice)
    results: list[tuple[int, float]] = []

    async def one() -> None:
        connection = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = await exchange(connection)
        except (asyncio.IncompleteReadError, ConnectionError):
            # Idle past the server's keep-alive timeout (5 s) and closed: as a client's pool
            # does, send again on a new connection, and time that one.
            connection[1].close()
            connection = await asyncio.open_connection("127.0.0.1", port)
            answer = await exchange(connection)
        opened.append(connection)
        results.append(answer)
        idle.append(connection)

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for _, writer in opened:
        writer.close()
    return results


def p99_ms(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=100)[98] * 1000 if len(seconds) > 1 else float("nan")


@dataclass(frozen=True)
class Figures:
    unloaded_p99_ms: float
    admitted: int
    admitted_p99_ms: float
    rejected: int
    rejected_p50_ms: float
    rejected_p99_ms: float
    other: int  # neither 200 nor 503
    predictor_calls: float
    predictor_errors: float


def predictor_counts(url: str) -> tuple[float, float]:
    """The predictor's POST /predict calls and its 5xx answers, from its own /metrics."""
    metrics = httpx2.get(f"{url}/metrics").text
    labels = {"service": "prediction-circuit-break-predictor", "route": "/predict"}
    errors = sum(requests_counted(metrics, status=str(s), **labels) for s in range(500, 600))
    return requests_counted(metrics, **labels), errors


def measure(proxy_port: int, predictor: str) -> Figures:
    quiet = asyncio.run(unloaded(proxy_port))
    calls_before, errors_before = predictor_counts(predictor)
    loaded = asyncio.run(open_loop(proxy_port, 3 * LIMIT / DELAY, SECONDS))
    calls_after, errors_after = predictor_counts(predictor)
    admitted = [s for status, s in loaded if status == 200]
    rejected = [s for status, s in loaded if status == 503]
    return Figures(
        unloaded_p99_ms=p99_ms([s for status, s in quiet if status == 200]),
        admitted=len(admitted),
        admitted_p99_ms=p99_ms(admitted),
        rejected=len(rejected),
        rejected_p50_ms=statistics.median(rejected) * 1000 if rejected else float("nan"),
        rejected_p99_ms=p99_ms(rejected),
        other=len(loaded) - len(admitted) - len(rejected) + sum(st != 200 for st, _ in quiet),
        predictor_calls=calls_after - calls_before,
        predictor_errors=errors_after - errors_before,
    )


def main() -> bool:
    proxies = ["proxy", "nginx"] if nginx_binary() else ["proxy"]
    load_before = os.getloadavg()[0]
    figures: dict[str, Figures] = {}
    with pattern_running(
        PATTERN,
        PREDICTION_CIRCUIT_BREAK_PREDICTOR_DELAY_SECONDS=str(DELAY),
        PREDICTION_CIRCUIT_BREAK_PROXY_MAX_IN_FLIGHT=str(LIMIT),
        PREDICTION_CIRCUIT_BREAK_NGINX_MAX_IN_FLIGHT=str(LIMIT),
        # Every 503 is an access-log line, at WARNING (shared/service.py): at 3x the limit that
        # is two lines in three requests, which costs the proxy more than the shedding does.
        PREDICTION_CIRCUIT_BREAK_PROXY_LOG_LEVEL="CRITICAL",
        PREDICTION_CIRCUIT_BREAK_PREDICTOR_LOG_LEVEL="WARNING",
        **({"COMPOSE_PROFILES": "nginx"} if "nginx" in proxies else {}),
    ) as pattern:
        predictor = pattern.url("predictor")
        for proxy in proxies:
            port = int(pattern.url(proxy).rsplit(":", 1)[1])
            figures[proxy] = measure(port, predictor)

    if "nginx" not in proxies:
        print("nginx: not on this machine, not measured")
    print(
        f"{'proxy':<8}{'unloaded p99':>14}{'admitted':>10}{'p99 ms':>8}{'ratio':>7}"
        f"{'rejected':>10}{'p50 ms':>8}{'p99 ms':>8}{'other':>7}{'predictor calls':>17}"
        f"{'errors':>8}"
    )
    met = True
    for proxy, f in figures.items():
        ratio = f.admitted_p99_ms / f.unloaded_p99_ms
        ok = (
            ratio <= ADMITTED_RATIO
            and f.rejected_p99_ms < REJECTED_P99_MS
            and f.predictor_errors == 0
            and f.other == 0
        )
        met = met and ok
        print(
            f"{proxy:<8}{f.unloaded_p99_ms:>14.2f}{f.admitted:>10}{f.admitted_p99_ms:>8.2f}"
            f"{ratio:>7.2f}{f.rejected:>10}{f.rejected_p50_ms:>8.2f}{f.rejected_p99_ms:>8.2f}{f.other:>7}"
            f"{f.predictor_calls:>17.0f}{f.predictor_errors:>8.0f}  {'MET' if ok else 'NOT MET'}"
        )
    print(
        f"(limit {LIMIT} at once, predictor {DELAY * 1000:.0f} ms a call: admits "
        f"{LIMIT / DELAY:.0f} req/s; offered {3 * LIMIT / DELAY:.0f} req/s open loop for "
        f"{SECONDS} s; unloaded: {REQUESTS} requests one at a time. Targets: admitted p99 <= "
        f"{ADMITTED_RATIO:g}x unloaded p99, rejected p99 < {REJECTED_P99_MS:g} ms, no predictor "
        "errors)"
    )
    print(
        f"(1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        "proxy.py's access log off: at its default level it writes a line per 503)"
    )
    return met
