"""End to end: both model servers from compose.yaml through local mode, judged by one SLO gate."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.testing import REPO_ROOT, pattern_running

PATTERN = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def gate(url: str) -> str:
    """The locustfile's verdict line on the server at `url`: make load's run, shorter."""
    result = subprocess.run(
        [sys.executable, "-m", "shared.loadtest", "online-bigsize", "--host", url,
         "--users", "32", "--duration", "8s"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    verdict = re.search(r"SLO (?:met|broken).*", result.stdout + result.stderr)
    assert verdict, (result.stdout + result.stderr)[-3000:]
    return verdict[0]


def test_the_slo_gate_fails_for_the_big_model_and_passes_for_the_small_one() -> None:
    with pattern_running(PATTERN) as pattern:
        # One after the other: the big one keeps a core busy, which would slow the small one.
        small = gate(pattern.url("small"))
        big = gate(pattern.url("big"))

    assert small.startswith("SLO met"), small
    assert "error rate 0.00%" in small
    # Missed on latency: its requests queue. Throughput is not asserted: it follows the cores'
    # speed (4 req/s in the README's run, 18 in a CI run, within the 15 req/s bound).
    assert big.startswith("SLO broken: p99 "), big
    # Its error rate is not asserted: queued for seconds, a few of its connections are closed.
