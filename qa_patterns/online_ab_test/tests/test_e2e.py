"""End to end: the pattern started from compose.yaml through local mode, with both proxies
(compose's `nginx` profile: proxy.py and nginx run side by side, in front of the same models),
over HTTP. The behaviour tests run against each proxy; one test compares them key by key. The
models record their predictions (Redis stream, recorder, PostgreSQL), where the tests read the
variant back."""

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from scipy.stats import binom

from qa_patterns.online_ab_test import simulate
from qa_patterns.online_ab_test.report import build
from qa_patterns.online_ab_test.split import (
    assign,
    rollback,
    set_b_percent,
    set_nginx_b_percent,
)
from shared.database import sqlalchemy_url
from shared.inference_log import InferenceRecord, connect_database, read_inferences
from shared.testing import LocalPattern, nginx_binary, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
PROXIES = ["proxy", "nginx"]
SETOSA = [5.1, 3.5, 1.4, 0.2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pattern() -> Iterator[LocalPattern]:
    if nginx_binary() is None:
        pytest.skip("no nginx on this machine (Debian: apt-get install nginx-light)")
    with pattern_running(PATTERN, COMPOSE_PROFILES="nginx") as p:
        yield p


@pytest.fixture
def at_ten_percent(pattern: LocalPattern) -> Iterator[LocalPattern]:
    """The pattern at the default share, put back afterwards whatever the test changed."""
    yield pattern
    for proxy in PROXIES:
        set_share(pattern, proxy, 10)


def database_url(p: LocalPattern) -> str:
    return sqlalchemy_url(p.service_url("postgres"))  # local mode's postgresql://, psycopg 3


def set_share(p: LocalPattern, proxy: str, b_percent: float) -> None:
    """B's share at `proxy`: PUT /weights, or nginx's split file and a graceful reload (the
    SIGHUP `nginx -s reload` sends, to the pid in local mode's nginx directory)."""
    if proxy == "proxy":
        set_b_percent(p.url("proxy"), b_percent)
        return
    nginx_dir = Path(p.servers["nginx"].dir)
    split_file = nginx_dir / "conf.d" / "split" / "split.conf"
    share = re.search(r"([0-9.]+)% b;", split_file.read_text())
    before = float(share.group(1)) if share else 0.0
    if before == b_percent:
        return
    set_nginx_b_percent(split_file, nginx_dir / "nginx.pid", b_percent)
    # The reload is done when new connections get the new split: a key whose variant changes.
    probe = next(
        f"probe-{i}"
        for i in range(100_000)
        if assign(f"probe-{i}", b_percent) != assign(f"probe-{i}", before)
    )
    wait_until(
        lambda: variant_of(p.url("nginx"), probe) == assign(probe, b_percent),
        timeout=15,
        what=f"nginx to take B's share of {b_percent} %",
    )


def variant_of(url: str, user_id: str) -> str:
    with httpx2.Client(timeout=10) as client:  # a new connection: the newest workers
        response = client.post(
            f"{url}/predict", json={"data": [SETOSA]}, headers={"X-User-ID": user_id}
        )
    assert response.status_code == 200, response.text
    return response.json()["variant"]  # type: ignore[no-any-return]


async def predict_many(
    url: str, headers: list[dict[str, str]], concurrency: int = 16
) -> list[httpx2.Response]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency)
    async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(h: dict[str, str]) -> httpx2.Response:
            async with gate:
                return await client.post("/predict", json={"data": [SETOSA]}, headers=h)

        return await asyncio.gather(*(one(h) for h in headers))


def variants(responses: list[httpx2.Response]) -> Counter[str]:
    assert {r.status_code for r in responses} == {200}
    assert all(r.json()["variant"] == r.headers["x-variant"] for r in responses)
    return Counter(r.json()["variant"] for r in responses)


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """B's count a fair split of n requests at share p stays within, but for a chance of alpha
    (one in a million: a failure is the split, not bad luck)."""
    return int(binom.ppf(alpha / 2, n, p)), int(binom.isf(alpha / 2, n, p))


def random_requests(n: int) -> list[dict[str, str]]:
    return [{"X-Request-ID": uuid.uuid4().hex} for _ in range(n)]


@pytest.mark.parametrize("proxy", PROXIES)
def test_over_many_requests_the_split_holds_90_10_within_the_binomial_bound(
    proxy: str, at_ten_percent: LocalPattern
) -> None:
    n = 2000
    counts = variants(asyncio.run(predict_many(at_ten_percent.url(proxy), random_requests(n))))

    low, high = binomial_bounds(n, 0.10)
    assert counts["a"] + counts["b"] == n
    assert low <= counts["b"] <= high, counts  # 10 %: between 8.0 % and 12.4 % of 2000


@pytest.mark.parametrize("proxy", PROXIES)
def test_sticky_mode_gives_a_user_the_same_variant_every_time(
    proxy: str, at_ten_percent: LocalPattern
) -> None:
    users = [f"sticky-{i}" for i in range(60)]
    headers = [{"X-User-ID": u} for u in users for _ in range(5)]
    responses = asyncio.run(predict_many(at_ten_percent.url(proxy), headers))

    seen: dict[str, set[str]] = {}
    for h, r in zip(headers, responses, strict=True):
        seen.setdefault(h["X-User-ID"], set()).add(r.json()["variant"])
    assert all(len(v) == 1 for v in seen.values())
    assert {u: v.pop() for u, v in seen.items()} == {u: assign(u, 10) for u in users}
    assert {assign(u, 10) for u in users} == {"a", "b"}  # both variants were exercised


def test_both_proxies_put_every_user_in_the_same_variant(at_ten_percent: LocalPattern) -> None:
    p = at_ten_percent
    users = [f"user-{i}" for i in range(1500)] + [uuid.uuid4().hex for _ in range(500)]
    headers = [{"X-User-ID": u} for u in users]
    by_proxy = {
        proxy: [r.json()["variant"] for r in asyncio.run(predict_many(p.url(proxy), headers))]
        for proxy in PROXIES
    }

    assert by_proxy["proxy"] == by_proxy["nginx"] == [assign(u, 10) for u in users]
    assert 100 < by_proxy["nginx"].count("b") < 300  # about 10 % of 2000


@pytest.mark.parametrize("proxy", PROXIES)
def test_the_answer_and_the_record_name_the_variant_that_served(
    proxy: str, at_ten_percent: LocalPattern
) -> None:
    p = at_ten_percent
    request_ids = {variant: f"{proxy}-names-{variant}-{uuid.uuid4().hex[:8]}" for variant in "ab"}
    user_of = {"a": next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) == "a")}
    user_of["b"] = next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) == "b")
    answers = {
        variant: httpx2.post(
            f"{p.url(proxy)}/predict",
            json={"data": [SETOSA]},
            headers={"X-User-ID": user_of[variant], "X-Request-ID": request_ids[variant]},
        )
        for variant in "ab"
    }
    engine = connect_database(database_url(p))
    try:

        def recorded() -> list[InferenceRecord] | None:
            rows = read_inferences(engine, request_ids=request_ids.values())
            return rows if len(rows) == 2 else None

        records = wait_until(recorded, timeout=20, what="both predictions recorded")
    finally:
        engine.dispose()

    for variant, answer in answers.items():
        assert answer.status_code == 200
        assert answer.json()["variant"] == answer.headers["x-variant"] == variant
        assert answer.json()["request_id"] == answer.headers["x-request-id"]
        assert answer.json()["request_id"] == request_ids[variant]
        assert answer.json()["predictions"][0]["label"] == "setosa"
    assert {(r.request_id, r.variant) for r in records} == {(request_ids[v], v) for v in "ab"}
    for record in records:
        assert record.rows == [SETOSA]
        assert record.predictions[0].label == "setosa"


@pytest.mark.parametrize("proxy", PROXIES)
def test_weights_change_at_run_time_without_a_restart(
    proxy: str, at_ten_percent: LocalPattern
) -> None:
    p = at_ten_percent
    pid = proxy_pid(p, proxy)
    n = 600
    shares = {}
    for b_percent in (50, 100, 0, 10):
        set_share(p, proxy, b_percent)
        shares[b_percent] = variants(asyncio.run(predict_many(p.url(proxy), random_requests(n))))

    assert proxy_pid(p, proxy) == pid  # the same process all along: no restart
    low, high = binomial_bounds(n, 0.5)
    assert low <= shares[50]["b"] <= high
    assert shares[100] == {"b": n}
    assert shares[0] == {"a": n}  # the rollback: everything to A
    low, high = binomial_bounds(n, 0.1)
    assert low <= shares[10]["b"] <= high


@pytest.mark.parametrize("proxy", PROXIES)
def test_weight_zero_rolls_back_to_a_and_b_can_then_be_stopped(
    proxy: str, at_ten_percent: LocalPattern
) -> None:
    p = at_ten_percent
    b_user = next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) == "b")
    try:
        if proxy == "proxy":
            assert rollback(p.url("proxy")).model_dump() == {"a_percent": 100.0, "b_percent": 0.0}
        else:
            set_share(p, proxy, 0)
        p.kill("model-b", len(p.processes["model-b"]) - 1)  # the copy running now
        after = asyncio.run(predict_many(p.url(proxy), [{"X-User-ID": b_user}] * 20))
        ready = httpx2.get(f"{p.url(proxy)}/ready")
    finally:
        p.start_replica("model-b")  # back, for the tests after this one
        p.wait_healthy("model-b", len(p.processes["model-b"]) - 1)

    assert variants(after) == {"a": 20}  # B's user is served by A, B is gone
    assert ready.status_code == 200


def test_the_report_joins_client_events_with_predictions_into_a_kpi_per_variant(
    at_ten_percent: LocalPattern,
) -> None:
    p = at_ten_percent
    db = database_url(p)
    before, _, _, _, _ = build(db)
    visits = asyncio.run(simulate.run(p.url("proxy"), 600, 300, 8, seed=11))
    served = Counter(v.variant for v in visits)
    converted = Counter(v.variant for v in visits if v.converted)

    def reported() -> tuple[int, int] | None:
        kpis, *_ = build(db)
        new = {v: kpis[v].predictions - (before[v].predictions if v in before else 0) for v in kpis}
        return (new["a"], new["b"]) if new == dict(served) else None

    wait_until(reported, timeout=30, what="every prediction of the run recorded")
    kpis, comparison, _, _, unmatched = build(db)

    for variant in "ab":
        old = before[variant].conversions if variant in before else 0
        assert kpis[variant].conversions - old == converted[variant]
    assert served["b"] > 20 and converted["a"] > 20
    assert comparison is not None and 0 <= comparison.p_value <= 1
    assert unmatched == 0


def proxy_pid(p: LocalPattern, proxy: str) -> int:
    if proxy == "nginx":  # the master: a graceful reload keeps it and replaces its workers
        nginx_dir = Path(p.servers["nginx"].dir)
        return int((nginx_dir / "nginx.pid").read_text())
    return p.processes["proxy"][0].pid


def test_nginxs_reload_to_a_new_share_fails_no_request_under_way(
    at_ten_percent: LocalPattern,
) -> None:
    p = at_ten_percent
    url, n, connections = p.url("nginx"), 1500, 8
    answered: list[httpx2.Response] = []
    retried = 0

    async def traffic() -> None:
        # An old worker closes its idle keep-alive connections at the reload; a request written
        # to one in that instant finds it closed before any answer (httpx's RemoteProtocolError,
        # or a ReadError on a reset): the race every HTTP/1.1 client meets and retries, as
        # browsers do. A request nginx has begun is answered; that is what is tested.
        nonlocal retried
        gate = asyncio.Semaphore(connections)
        limits = httpx2.Limits(max_connections=connections)
        async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

            async def one(headers: dict[str, str]) -> None:
                nonlocal retried
                body = {"data": [SETOSA]}
                async with gate:
                    try:
                        response = await client.post("/predict", json=body, headers=headers)
                    except (httpx2.RemoteProtocolError, httpx2.ReadError):
                        retried += 1
                        response = await client.post("/predict", json=body, headers=headers)
                    answered.append(response)

            await asyncio.gather(*(one(h) for h in random_requests(n)))

    async def traffic_with_a_reload() -> None:
        during = asyncio.create_task(asyncio.to_thread(lambda: asyncio.run(traffic())))
        # The reload once the requests are under way: a tenth of them answered.
        while len(answered) < n // 10 and not during.done():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(set_share, p, "nginx", 50)
        await during

    asyncio.run(traffic_with_a_reload())

    assert [r.status_code for r in answered] == [200] * n  # none refused, none dropped
    assert {r.json()["variant"] for r in answered} == {"a", "b"}
    assert retried <= connections  # at most each idle connection, once
