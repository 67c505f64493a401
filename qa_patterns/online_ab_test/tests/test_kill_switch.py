"""The kill switch end to end in one process: predictions and conversions recorded in an SQLite
database, proxy.py in front of stub models, and report.guard rolling B back when it converts
significantly worse (and not otherwise)."""

from pathlib import Path

import httpx2

from qa_patterns.online_ab_test import events_store
from qa_patterns.online_ab_test.report import guard
from qa_patterns.online_ab_test.tests.test_proxy import proxy
from qa_patterns.online_ab_test.tests.test_report import trial
from shared.inference_log import connect_database, write_records


def recorded(tmp_path: Path, rates: dict[str, float], n: int) -> str:
    url = f"sqlite:///{tmp_path}/ab.db"
    inferences, events = trial(rates, n)
    engine = connect_database(url)
    write_records(engine, inferences)
    engine.dispose()
    engine = events_store.connect(url)
    events_store.store(engine, events)
    engine.dispose()
    return url


def test_a_significantly_worse_b_is_rolled_back_at_the_proxy(tmp_path: Path) -> None:
    database = recorded(tmp_path, {"a": 0.3, "b": 0.15}, 600)
    with proxy() as (url, _, _):
        decision = guard(database, url)
        weights = httpx2.get(f"{url}/weights").json()

    assert decision == "roll back B"
    assert weights == {"b_percent": 0.0, "a_percent": 100.0}


def test_a_b_no_worse_keeps_its_share(tmp_path: Path) -> None:
    database = recorded(tmp_path, {"a": 0.3, "b": 0.3}, 600)
    with proxy() as (url, _, _):
        decision = guard(database, url)
        weights = httpx2.get(f"{url}/weights").json()

    assert decision == "keep testing"
    assert weights == {"b_percent": 10.0, "a_percent": 90.0}
