"""Every locustfile runs against its pattern: `make load` works for each online pattern.

A short, light run (CI shares its cores with the rest of the suite), so it asserts that the
load test runs, that nothing fails under it, and that the SLO verdict is reported; the SLO
figures themselves are measured with `make load` on a quiet machine (each pattern's README).
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.catalogue import REPO_ROOT
from shared.loadtest import SLO, entry_url, slo_breaches
from shared.testing import pattern_running
from tests.conftest import implemented

ONLINE = [entry for entry in implemented() if (entry.path / "locustfile.py").exists()]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("entry", ONLINE, ids=lambda e: e.slug)
def test_locustfile_runs_clean_against_the_pattern(entry) -> None:  # type: ignore[no-untyped-def]
    report = REPO_ROOT / "reports" / f"{entry.slug}-load.html"
    report.unlink(missing_ok=True)  # the one checked below is this run's
    with pattern_running(entry.path) as pattern:
        entry_service = next(name for name, s in pattern.services.items() if s.published)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.loadtest",
                entry.slug,
                "--host",
                pattern.url(entry_service),
                "--users",
                "4",
                "--duration",
                "4s",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    output = result.stdout + result.stderr
    assert "SLO met" in output or "SLO broken" in output, output[-3000:]
    # Over every request and custom event (an async job that failed counts), not one row's.
    assert "error rate 0.00%" in output, f"requests failed under load:\n{output[-3000:]}"
    assert report.exists()


def test_make_load_finds_the_port_where_make_run_put_the_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = REPO_ROOT / "serving_patterns" / "web_single"
    monkeypatch.delenv("WEB_SINGLE_PORT", raising=False)
    default = entry_url(folder)
    monkeypatch.setenv("WEB_SINGLE_PORT", "8100")

    assert default == "http://127.0.0.1:8000"
    assert entry_url(folder) == "http://127.0.0.1:8100"
    assert entry_url(folder, port_offset=5) == "http://127.0.0.1:8105"


def test_a_slow_start_does_not_cut_the_run_short(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(
        "import time\n"
        "from locust import HttpUser, constant, task\n"
        "from shared.loadtest import SLO, enforce_slo\n"
        "started = time.monotonic()\n"
        "while time.monotonic() - started < 3:  # a start as slow as a busy machine's\n"
        "    pass\n"
        "enforce_slo(SLO(p99_ms=1000, max_error_rate=1.0, min_rps=0))\n"
        "class Caller(HttpUser):\n"
        "    wait_time = constant(0.1)\n"
        "    @task\n"
        "    def call(self):\n"
        "        self.client.get('/health')\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--users", "1",
            "--run-time", "2s", "--host", "http://127.0.0.1:9", "--only-summary",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    seconds = time.monotonic() - started

    sent = re.search(r"over (\d+) requests", result.stderr)
    assert sent is not None, result.stderr[-2000:]  # the SLO verdict was reported
    assert int(sent[1]) >= 5  # 2 s at one request per 0.1 s, not cut short
    assert seconds >= 3 + 2  # the start, then the whole run


def test_an_entry_with_a_bound_of_its_own_is_judged_by_it_and_not_by_the_common_one() -> None:
    slo = SLO(p99_ms=100, max_error_rate=0.001, min_rps=10, p99_ms_of={"job done": 300})

    assert slo_breaches(slo, 90, 0, 50, {"job done": 250}) == []
    assert slo_breaches(slo, 90, 0, 50, {"job done": 350}) == ["job done p99 350 ms > 300 ms"]
    assert slo_breaches(slo, 120, 0.01, 5, {"job done": 10}) == [
        "p99 120 ms > 100 ms",
        "error rate 1.00% > 0.10%",
        "throughput 5 req/s < 10 req/s",
    ]
