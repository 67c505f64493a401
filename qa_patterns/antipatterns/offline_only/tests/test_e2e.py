"""End to end: the pattern started from compose.yaml through local mode (the trainer's one-shot,
online_ab_test's proxy, both model servers, the recorder, the events collector, Redis and
PostgreSQL), the simulated users over HTTP. Both releases of the same candidate, on one start:

1. the fix: the candidate behind the online A/B test at 10 %, the KPI logged, online_ab_test's
   guard run after each batch of visits (as from cron): it keeps testing while there are too
   few predictions, then rolls B back on the significant drop; after that no request reaches B.
2. the antipattern: the candidate shipped to everyone on its offline score; the same visitors
   as before the release convert far less, and nothing in the release stops it.

The fix runs first, on the fresh database, so that its guard compares only its own experiment
(the module's tests share one worker and one start: one xdist group)."""

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from qa_patterns.antipatterns.offline_only import population, release
from qa_patterns.online_ab_test import simulate
from qa_patterns.online_ab_test.report import VariantKPI, build, compare, guard, wilson_interval
from qa_patterns.online_ab_test.simulate import Visit
from qa_patterns.online_ab_test.split import set_b_percent
from shared.database import sqlalchemy_url
from shared.testing import LocalPattern, pattern_running, requests_counted, wait_until

PATTERN = Path(__file__).resolve().parents[1]
BATCH = 400  # visits between two runs of the guard

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("offline_only_e2e")]


@pytest.fixture(scope="module")
def pattern() -> Iterator[LocalPattern]:
    with pattern_running(PATTERN) as p:
        yield p


def visits(p: LocalPattern, n: int, seed: int) -> list[Visit]:
    """n visits of the simulated users (population.py's rule), n / 2 distinct users."""
    return asyncio.run(
        simulate.run(p.url("proxy"), n, n // 2, 8, seed, population=population.converts)
    )


def recorded(p: LocalPattern, expected: int) -> None:
    """Wait until the recorder has written all `expected` predictions."""
    database = sqlalchemy_url(p.service_url("postgres"))

    def written() -> bool:
        kpis, *_ = build(database)
        return sum(k.predictions for k in kpis.values()) == expected

    wait_until(written, timeout=30, what=f"{expected} predictions recorded")


def b_predictions(p: LocalPattern) -> float:
    """The predictions model B has answered, by its own /metrics."""
    metrics = httpx2.get(f"{p.url('model-b')}/metrics").text
    return requests_counted(metrics, route="/predict", status="200")


def kpi(variant: str, seen: list[Visit]) -> VariantKPI:
    n, k = len(seen), sum(v.converted for v in seen)
    return VariantKPI(variant, n, k, *wilson_interval(k, n), math.nan, math.nan)


def test_the_ab_test_detects_the_kpi_drop_and_the_kill_switch_stops_the_candidate(
    pattern: LocalPattern,
) -> None:
    p, url = pattern, pattern.url("proxy")
    database = sqlalchemy_url(p.service_url("postgres"))
    proxy_pid = p.processes["proxy"][0].pid
    evaluation = release.evaluate()
    started = release.ab(url, evaluation)

    decisions, total = [], 0
    for batch in range(10):
        total += len(visits(p, BATCH, seed=100 + batch))
        recorded(p, total)
        decisions.append(guard(database, url))  # the kill switch, run as from cron
        if decisions[-1] != "keep testing":
            break
    kpis, comparison, *_ = build(database)

    assert evaluation.candidate_wins and started is not None and started.b_percent == 10
    assert decisions[0] == "keep testing"  # too few of B's predictions to tell
    assert decisions[-1] == "roll back B", (decisions, kpis)
    assert comparison is not None and comparison.p_value < 0.05 and comparison.difference < 0
    assert kpis["b"].predictions >= 100
    assert httpx2.get(f"{url}/weights").json() == {"b_percent": 0.0, "a_percent": 100.0}

    b_before = b_predictions(p)
    after = visits(p, 100, seed=999)  # new users: 10 % of them were B's before the kill
    recorded(p, total + 100)

    assert Counter(v.variant for v in after) == {"a": 100}
    assert b_predictions(p) == b_before  # no request reached B
    assert build(database)[0]["b"].predictions == kpis["b"].predictions
    assert p.processes["proxy"][0].pid == proxy_pid  # switched at run time: no restart


def test_the_offline_only_release_ships_the_candidate_to_everyone_and_the_kpi_falls(
    pattern: LocalPattern,
) -> None:
    p, url = pattern, pattern.url("proxy")
    set_b_percent(url, 0)  # before the release: the current model serves everyone
    before = visits(p, 200, seed=7)
    shipped = release.offline_only(url, release.evaluate())
    after = visits(p, 200, seed=7)  # the same visitors, flowers and draws: only the model differs
    try:
        weights = httpx2.get(f"{url}/weights").json()
    finally:
        set_b_percent(url, 0)
    drop = compare(kpi("a", before), kpi("b", after))

    assert shipped is not None and shipped.b_percent == 100
    assert Counter(v.variant for v in before) == {"a": 200}
    assert Counter(v.variant for v in after) == {"b": 200}  # every user gets the candidate
    assert drop.difference < 0 and drop.p_value < 0.01, drop
    assert drop.relative_lift is not None and drop.relative_lift < -0.3
    assert weights == {"b_percent": 100.0, "a_percent": 0.0}  # and nothing took it back
