"""End to end: seed, warmer, proxy, predictor, a private redis-server and a PostgreSQL database
of the test's own, started from compose.yaml through local mode, over HTTP. The proxy's own
counters say whether a request read the database and ran the preprocessing; the predictor's
request counter says whether it was called."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from shared.testing import LocalPattern, pattern_running, requests_counted, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = {"sepal_length_mm": 51, "sepal_width_mm": 35, "petal_length_mm": 14, "petal_width_mm": 2}
VIRGINICA = {
    "sepal_length_mm": 67,
    "sepal_width_mm": 30,
    "petal_length_mm": 52,
    "petal_width_mm": 23,
}
NO_WARMER = {"DATA_CACHE_WARMER_REPLICAS": "0"}

pytestmark = pytest.mark.e2e


def predict(p: LocalPattern, record_id: Any) -> httpx2.Response:
    return httpx2.post(f"{p.url('proxy')}/predict", json={"id": record_id}, timeout=10)


def add(p: LocalPattern, fields: dict[str, int]) -> dict[str, Any]:
    answer = httpx2.post(f"{p.url('proxy')}/records", json=fields, timeout=10)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def counts(p: LocalPattern) -> dict[str, float]:
    """Database reads and preprocessing runs (the proxy's counters), predictor calls (its own)."""
    proxy = {
        sample.name: sample.value
        for family in text_string_to_metric_families(httpx2.get(f"{p.url('proxy')}/metrics").text)
        for sample in family.samples
    }
    predictor = httpx2.get(f"{p.url('predictor')}/metrics").text
    return {
        "database reads": proxy["data_cache_database_reads_total"],
        "preprocessing runs": proxy["data_cache_preprocessing_runs_total"],
        "predictor calls": requests_counted(
            predictor, service="data-cache-predictor", route="/predict"
        ),
    }


def store(p: LocalPattern) -> redis.Redis:
    return redis.Redis.from_url(p.service_url("redis"))


def timed(p: LocalPattern, record_id: int) -> tuple[httpx2.Response, float]:
    started = time.perf_counter()
    answer = predict(p, record_id)
    return answer, time.perf_counter() - started


def test_a_repeat_id_skips_the_database_and_preprocessing_but_still_calls_the_predictor() -> None:
    delay = 0.3  # a costly preprocessing, so that what a hit saves shows
    with pattern_running(
        PATTERN, **NO_WARMER, DATA_CACHE_PROXY_PREPROCESS_DELAY_SECONDS=str(delay)
    ) as p:
        before = counts(p)
        first, first_seconds = timed(p, 1)
        after_first = counts(p)
        second, second_seconds = timed(p, 1)
        after_second = counts(p)

    assert before == {"database reads": 0, "preprocessing runs": 0, "predictor calls": 0}
    assert first.status_code == second.status_code == 200
    assert (first.json()["cache"], second.json()["cache"]) == ("miss", "hit")
    assert after_first == {"database reads": 1, "preprocessing runs": 1, "predictor calls": 1}
    # The database and the preprocessing were skipped; the model was not.
    assert after_second == {"database reads": 1, "preprocessing runs": 1, "predictor calls": 2}
    assert second.json()["predictions"] == first.json()["predictions"]
    assert second.json()["record_id"] == first.json()["record_id"] == 1
    assert second.json()["revision"] == first.json()["revision"] == 1
    assert first_seconds >= delay > second_seconds


def test_after_the_warmer_runs_the_first_request_for_a_new_record_is_a_hit() -> None:
    with pattern_running(PATTERN, DATA_CACHE_WARMER_POLL_SECONDS="0.2") as p:
        seeded = predict(p, 1)  # warmed before the pattern counted as up
        record = add(p, VIRGINICA)
        key = f"data-cache:record:{record['id']}"
        wait_until(lambda: store(p).hget(key, "features"), timeout=15, what="the warmer")
        before = counts(p)
        first = predict(p, record["id"])
        after = counts(p)

    assert seeded.json()["cache"] == "hit"
    assert first.status_code == 200
    assert first.json()["cache"] == "hit"  # its very first request
    assert first.json()["predictions"][0]["label"] == "virginica"
    assert first.json()["revision"] == record["revision"]
    assert after["database reads"] == before["database reads"] == 0
    assert after["preprocessing runs"] == before["preprocessing runs"] == 0
    assert after["predictor calls"] == before["predictor calls"] + 1


def test_a_changed_record_is_invalidated_and_the_next_read_sees_the_new_values() -> None:
    # No warmer: only the invalidation can make the next read see the change.
    with pattern_running(PATTERN, **NO_WARMER) as p:
        record = add(p, SETOSA)
        old = [predict(p, record["id"]).json() for _ in range(2)]
        changed = httpx2.put(f"{p.url('proxy')}/records/{record['id']}", json=VIRGINICA)
        new = [predict(p, record["id"]).json() for _ in range(2)]
        reads = counts(p)["database reads"]

    assert [(a["cache"], a["predictions"][0]["label"]) for a in old] == [
        ("miss", "setosa"),
        ("hit", "setosa"),
    ]
    assert changed.status_code == 200
    assert changed.json() == {**VIRGINICA, "id": record["id"], "revision": record["revision"] + 1}
    assert [(a["cache"], a["predictions"][0]["label"]) for a in new] == [
        ("miss", "virginica"),
        ("hit", "virginica"),
    ]
    assert {a["revision"] for a in new} == {record["revision"] + 1}
    assert reads == 2  # the first read, and the one after the change


def test_the_warmer_rewrites_a_changed_record_before_it_is_asked_for() -> None:
    with pattern_running(PATTERN, DATA_CACHE_WARMER_POLL_SECONDS="0.2") as p:
        changed = httpx2.put(f"{p.url('proxy')}/records/1", json=VIRGINICA).json()
        key = "data-cache:record:1"
        wait_until(
            lambda: (
                store(p).hget(key, "revision") == str(changed["revision"]).encode()
                and store(p).hget(key, "features")
            ),
            timeout=15,
            what="the warmer to rewrite record 1",
        )
        answer = predict(p, 1).json()
        reads = counts(p)["database reads"]

    assert (answer["cache"], answer["predictions"][0]["label"]) == ("hit", "virginica")
    assert reads == 0


def test_after_the_ttl_the_record_is_read_from_the_database_again() -> None:
    with pattern_running(PATTERN, **NO_WARMER, DATA_CACHE_PROXY_TTL_SECONDS="1") as p:
        config = store(p).config_get("maxmemory*")
        caches = [predict(p, 1).json()["cache"] for _ in range(2)]
        ttl_ms = store(p).pttl("data-cache:record:1")
        wait_until(lambda: not store(p).exists("data-cache:record:1"), timeout=10, what="expiry")
        after_ttl = predict(p, 1).json()["cache"]
        reads = counts(p)["database reads"]

    assert config["maxmemory"] == str(64 * 1024 * 1024)
    assert config["maxmemory-policy"] == "volatile-lru"
    assert caches == ["miss", "hit"]
    assert 0 < ttl_ms <= 1000
    assert after_ttl == "miss"
    assert reads == 2


def test_an_unknown_id_is_a_404_and_a_malformed_one_a_422() -> None:
    with pattern_running(PATTERN, **NO_WARMER) as p:
        unknown = predict(p, 999_999)
        malformed = [predict(p, value) for value in (0, -1, 2**63, "7", 1.5, None)]
        change_unknown = httpx2.put(f"{p.url('proxy')}/records/999999", json=SETOSA)
        bad_record = httpx2.post(f"{p.url('proxy')}/records", json={**SETOSA, "petal_width_mm": 0})
        keys = store(p).keys("data-cache:record:*")

    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no record with id 999999"
    for answer in malformed:
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "id"]
    assert change_unknown.status_code == 404
    assert bad_record.status_code == 422
    assert bad_record.json()["detail"][0]["loc"] == ["body", "petal_width_mm"]
    assert keys == []  # nothing cached for what does not exist


def test_redis_down_reads_records_from_the_database_and_caching_resumes() -> None:
    with pattern_running(PATTERN, **NO_WARMER, DATA_CACHE_PROXY_REDIS_RETRY_SECONDS="0.5") as p:
        assert [predict(p, 1).json()["cache"] for _ in range(2)] == ["miss", "hit"]
        p.stop_infrastructure("redis")
        before = counts(p)
        down = [timed(p, 1) for _ in range(3)]
        during = counts(p)
        p.restart_infrastructure("redis")  # same port, empty: a cache keeps nothing on disk

        def cached_again() -> bool:
            answers = [predict(p, 1).json()["cache"] for _ in range(2)]
            return bool(answers[-1] == "hit")

        wait_until(cached_again, timeout=15, what="caching to resume")

    for answer, seconds in down:
        assert answer.status_code == 200
        assert answer.json()["cache"] == "miss"
        assert answer.json()["predictions"][0]["label"] == "setosa"
        assert seconds < 2.0  # Redis refuses at once: no waiting on it
    assert during["database reads"] == before["database reads"] + 3
    assert during["predictor calls"] == before["predictor calls"] + 3


def test_after_redis_restarts_empty_the_warmer_fills_it_again() -> None:
    with pattern_running(PATTERN, DATA_CACHE_WARMER_POLL_SECONDS="0.2") as p:
        p.restart_infrastructure("redis")  # empty, its watermark gone with the entries
        wait_until(
            lambda: store(p).get("data-cache:warmed-revision") == b"150",
            timeout=20,
            what="the warmer to fill the cache again",
        )
        answers = [predict(p, record_id).json()["cache"] for record_id in (1, 75, 150)]
        reads = counts(p)["database reads"]

    assert answers == ["hit", "hit", "hit"]
    assert reads == 0


@contextmanager
def database_refusing(p: LocalPattern) -> Iterator[None]:
    """The pattern's own PostgreSQL database refuses connections, and its sessions are ended:
    a database outage for this test alone (the server is shared)."""
    url = make_url(p.variables["DATABASE_URL"])
    admin_url = url.set(drivername="postgresql", database="postgres")
    name = url.database
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_database_down_is_a_503_naming_it_while_cached_records_are_still_answered() -> None:
    with pattern_running(PATTERN, **NO_WARMER) as p:
        assert predict(p, 1).json()["cache"] == "miss"
        with database_refusing(p):
            cached = predict(p, 1)
            uncached, seconds = timed(p, 2)
            write = httpx2.post(f"{p.url('proxy')}/records", json=SETOSA, timeout=10)
            ready = httpx2.get(f"{p.url('proxy')}/ready")

        def answered() -> httpx2.Response | None:
            answer = predict(p, 2)
            return answer if answer.status_code == 200 else None

        back = wait_until(answered, timeout=15, what="the database back")

    assert cached.status_code == 200
    assert cached.json()["cache"] == "hit"  # Redis still holds it: no database needed
    assert uncached.status_code == 503
    assert uncached.json()["detail"] == "the database is unavailable (OperationalError)"
    assert uncached.headers["retry-after"] == "1"
    assert seconds < 3.0  # refused, then answered at once: no hang
    assert write.status_code == 503
    assert "the database is unavailable" in write.json()["detail"]
    assert ready.status_code == 200  # hits still served: not taken out of rotation
    assert back.json()["cache"] == "miss"
