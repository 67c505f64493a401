"""Shadow A/B test: the client's latency with model B slowed in the shadow, against B absent
(out of the shadow) and B healthy (in the shadow at its own speed), for proxy.py and nginx; and
nginx's mirror straight to B, which holds the client's connection while B works.

The pattern runs from its compose file through local mode (the nginx profile too, when the
machine has nginx), with B slowed to B_DELAY seconds a call (its deadline at the proxies is
B_TIMEOUT, above it: every copy is answered). CLIENTS keep-alive connections each send RATE
requests a second on schedule for SECONDS (below the proxies' capacity: the figures are the
latency of a request, not of a queue). B is taken out of the shadow and put back between loads
(PUT /shadow, nginx's switch file: no restart) in alternating order over ROUNDS rounds, so
drift in the machine's speed hits both alike; one run of the pattern with B at its own speed,
one with B slowed, each with its own B-absent loads. Each figure is the median over the rounds
of that load's p50 and p99.

Target: with B slowed, the client's p50 within 1.25x and p99 within 1.5x of B absent. What a
copy costs at all (the proxy's second call, B's model on the same 2 cores) is B healthy against
B absent; what B's slowness costs is B slowed against B healthy. nginx with
`SHADOW_AB_TEST_NGINX_MIRROR=direct` is measured once, for the contrast (no target).
"""

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx2

from benchmarks.prediction_circuit_break import Connection, connections, exchange
from shared.localmode import REPO_ROOT, LocalPattern, nginx_binary
from shared.testing import pattern_running

PATTERN = REPO_ROOT / "qa_patterns" / "shadow_ab_test"
B_DELAY, B_TIMEOUT = 0.5, 2.0
CLIENTS, RATE, SECONDS, ROUNDS = 4, 20.0, 5, 4  # 80 requests/s in all
P50_RATIO, P99_RATIO = 1.25, 1.5


async def paced(port: int, clients: int, rate: float, seconds: float) -> list[float]:
    """`clients` keep-alive connections, each sending `rate` requests a second on schedule (one
    that is late is sent at once, none is skipped): every answer's seconds (a non-200 fails the
    benchmark). Below the proxies' capacity, so that the figures are latency, not a queue."""
    opened = await connections(port, clients)
    started = time.monotonic()
    took: list[float] = []

    async def client(connection: Connection, offset: float) -> None:
        due = started + offset
        while due < started + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += 1 / rate
            try:
                status, elapsed = await exchange(connection)
            except (asyncio.IncompleteReadError, ConnectionError):
                # nginx closes a keep-alive connection after 1,000 requests (keepalive_requests)
                connection = await asyncio.open_connection("127.0.0.1", port)
                opened.append(connection)
                continue
            if status != 200:
                raise RuntimeError(f"answer {status} from port {port}")
            took.append(elapsed)

    try:
        await asyncio.gather(*(client(c, i / (rate * clients)) for i, c in enumerate(opened)))
    finally:
        for _, writer in opened:
            writer.close()
    return took


def percentiles_ms(took: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(took, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def set_shadow(pattern: LocalPattern, proxy: str, off_file: Path, enabled: bool) -> None:
    if proxy == "nginx":
        if enabled:
            off_file.unlink(missing_ok=True)
        else:
            off_file.touch()
    else:
        httpx2.put(f"{pattern.url('proxy')}/shadow", json={"enabled": enabled}).raise_for_status()


def port_of(pattern: LocalPattern, proxy: str) -> int:
    url = pattern.url("nginx", 8080) if proxy == "nginx" else pattern.url("proxy")
    return int(url.rsplit(":", 1)[1])


def main() -> bool:
    proxies = ["proxy", "nginx"] if nginx_binary() else ["proxy"]
    load_before = os.getloadavg()[0]
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    settings = {
        "SHADOW_AB_TEST_PROXY_B_TIMEOUT_SECONDS": f"{B_TIMEOUT:g}",
        "SHADOW_AB_TEST_NGINX_B_TIMEOUT_SECONDS": f"{B_TIMEOUT:g}",  # nginx: whole seconds
        **({"COMPOSE_PROFILES": "nginx"} if "nginx" in proxies else {}),
    }
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)  # nginx's workers (another user under root) look for the file
        off_file = Path(folder) / "shadow-off"
        # One run with B at its own speed, one with B slowed; each against B absent, measured
        # in the same run (a restarted B's first seconds would cost more than the shadow).
        for shadowed, delay in (("healthy", 0.0), ("slowed", B_DELAY)):
            with pattern_running(
                PATTERN,
                SHADOW_AB_TEST_NGINX_SHADOW_OFF_FILE=str(off_file),
                SHADOW_AB_TEST_MODEL_B_DELAY_SECONDS=f"{delay:g}",
                **settings,
            ) as pattern:
                for round_ in range(ROUNDS):
                    for proxy in proxies:
                        cases = ["absent", shadowed]
                        for case in cases if round_ % 2 == 0 else cases[::-1]:
                            set_shadow(pattern, proxy, off_file, case != "absent")
                            port = port_of(pattern, proxy)
                            asyncio.run(paced(port, CLIENTS, RATE, 1))  # warm-up
                            took = asyncio.run(paced(port, CLIENTS, RATE, SECONDS))
                            key = case if case != "absent" else f"absent ({shadowed} run)"
                            figures.setdefault((proxy, key), []).append(percentiles_ms(took))
                            set_shadow(pattern, proxy, off_file, True)
        direct: tuple[float, float] | None = None
        if "nginx" in proxies:
            with pattern_running(
                PATTERN,
                SHADOW_AB_TEST_NGINX_SHADOW_OFF_FILE=str(off_file),
                SHADOW_AB_TEST_NGINX_MIRROR="direct",
                SHADOW_AB_TEST_MODEL_B_DELAY_SECONDS=f"{B_DELAY:g}",
                **settings,
            ) as pattern:
                took = asyncio.run(paced(port_of(pattern, "nginx"), CLIENTS, RATE, SECONDS))
                direct = percentiles_ms(took)

    def median(proxy: str, case: str) -> tuple[float, float]:
        runs = figures[(proxy, case)]
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    if "nginx" not in proxies:
        print("nginx: not on this machine, not measured")
    print(
        f"{'proxy':<8}{'run':<9}{'B absent p50':>14}{'p99 ms':>8}{'B in shadow p50':>17}"
        f"{'p99 ms':>8}{'ratio p50':>11}{'p99':>6}"
    )
    met = True
    for proxy in proxies:
        for shadowed in ("healthy", "slowed"):
            (a50, a99), (s50, s99) = (
                median(proxy, f"absent ({shadowed} run)"),
                median(proxy, shadowed),
            )
            ok = s50 <= P50_RATIO * a50 and s99 <= P99_RATIO * a99
            if shadowed == "slowed":
                met = met and ok
            verdict = ("MET" if ok else "NOT MET") if shadowed == "slowed" else ""
            print(
                f"{proxy:<8}{'B ' + shadowed:<9}{a50:>14.2f}{a99:>8.2f}{s50:>17.2f}{s99:>8.2f}"
                f"{s50 / a50:>11.2f}{s99 / a99:>6.2f}  {verdict}"
            )
    if direct is not None:
        print(
            f"nginx, mirror straight to B (no relay), B slowed: p50 {direct[0]:.2f} ms, "
            f"p99 {direct[1]:.2f} ms: the client's next request waits for B"
        )
    print(
        f"(B slowed takes {B_DELAY * 1000:.0f} ms a call, its deadline {B_TIMEOUT:g} s; {CLIENTS} "
        f"keep-alive clients at {RATE:g} requests/s each, {SECONDS} s a load, {ROUNDS} rounds in "
        f"alternating order, medians of each load's p50 and p99. Target: B slowed within "
        f"{P50_RATIO:g}x (p50) and {P99_RATIO:g}x (p99) of B absent)"
    )
    print(f"(1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    return met
