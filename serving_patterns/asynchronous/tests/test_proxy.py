"""In-process tests of the proxy with a private redis-server: submit, poll, bad input, outages."""

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio import Connection as RedisConnection

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.proxy import create_app
from serving_patterns.asynchronous.settings import ProxySettings
from shared.testing import RedisServer, ready_client, served, wait_until

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    return redis_server


def _client(server: RedisServer, **settings: Any) -> AbstractContextManager[TestClient]:
    return ready_client(create_app(_proxy(server, **{"max_rows": 5, **settings})))


@pytest.fixture
def client(server: RedisServer) -> Iterator[TestClient]:
    with _client(server) as client:
        yield client


def test_submit_answers_202_with_a_job_id_and_queues_the_job_with_its_record(
    client: TestClient, server: RedisServer
) -> None:
    response = client.post("/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "sub-1"})

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["request_id"] == "sub-1"
    store = redis.Redis.from_url(server.url)
    message = store.lindex("predictions", 0)
    assert message is not None
    queued = json.loads(message)
    assert queued["headers"]["id"] == body["job_id"]
    assert json.loads(queued["body"])[1]["rows"] == [SETOSA]
    assert store.ttl(jobs.job_key(body["job_id"])) > 0  # records expire


def test_job_is_pending_until_a_worker_records_it(client: TestClient) -> None:
    job_id = client.post("/predict", json={"data": [SETOSA]}).json()["job_id"]

    job = client.get(f"/jobs/{job_id}")

    assert job.status_code == 200
    assert job.json()["status"] == "pending"
    assert job.json()["attempts"] == 0
    assert job.json()["predictions"] is None


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get(f"/jobs/{jobs.new_job_id()}")

    assert response.status_code == 404
    assert "never submitted, or expired" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[5.1, 3.5, 1.4]]}, "expected 4 features"),
        ({"data": [[5.1, "tall", 1.4, 0.2]]}, "valid number"),
        ({"data": []}, "at least 1 item"),
        ({"data": [SETOSA] * 6}, "at most 5 rows per request, got 6"),
        ({"data": [[1e39, 3.5, 1.4, 0.2]]}, "float32 range"),
        ({"rows": [SETOSA]}, "Field required"),
    ],
)
def test_submit_rejects_bad_input_naming_the_problem_and_queues_nothing(
    client: TestClient, server: RedisServer, payload: object, problem: str
) -> None:
    response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text
    assert redis.Redis.from_url(server.url).llen("predictions") == 0


def test_submit_refuses_with_503_when_the_queue_is_full(server: RedisServer) -> None:
    with _client(server, max_queue_length=2) as client:
        accepted = [client.post("/predict", json={"data": [SETOSA]}) for _ in range(2)]
        refused = client.post("/predict", json={"data": [SETOSA]})

    assert [r.status_code for r in accepted] == [202, 202]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "queue full" in refused.json()["detail"]


def test_submit_answers_503_at_once_while_redis_is_down(server: RedisServer) -> None:
    with _client(server, redis_timeout_seconds=10) as client:
        server.stop()

        started = time.perf_counter()
        response = client.post("/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started
        ready = client.get("/ready")

    assert response.status_code == 503
    assert elapsed < 2.5  # refused connections: no wait for the 10 s Redis timeout
    assert "job store unavailable" in response.json()["detail"]
    assert ready.status_code == 503
    assert "redis" in ready.json()["reasons"]


def test_dead_letters_list_newest_first(client: TestClient, server: RedisServer) -> None:
    store = redis.Redis.from_url(server.url)
    for job_id in ("old", "new"):
        letter = {
            "job_id": job_id,
            "request_id": "r",
            "rows": [SETOSA],
            "error": "E: x",
            "attempts": 3,
            "failed_at": 1.0,
        }
        store.rpush(jobs.DEAD_LETTERS, json.dumps(letter))

    response = client.get("/dead-letters")

    assert response.status_code == 200
    assert [d["job_id"] for d in response.json()] == ["new", "old"]


def test_metadata_comes_from_the_model_card(client: TestClient) -> None:
    metadata = client.get("/metadata").json()

    assert metadata["model_name"] == "iris"
    assert client.post("/predict", json=metadata["sample_input"]).status_code == 202


@pytest.mark.parametrize(
    ("raw", "status", "problem"),
    [(b'{"data": [[5.1,', 422, "json_invalid"), (b"\xff\xfe\x00", 400, "not UTF-8")],
)
def test_submit_rejects_a_body_that_is_not_json(
    client: TestClient, raw: bytes, status: int, problem: str
) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})

    assert response.status_code == status
    assert problem in response.text


def _burst(url: str, n: int) -> list[httpx2.Response]:
    async def burst() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=n)
        async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            calls = [client.post("/predict", json={"data": [SETOSA]}) for _ in range(n)]
            return list(await asyncio.gather(*calls))

    return asyncio.run(burst())


def _proxy(server: RedisServer, **settings: Any) -> ProxySettings:
    # Any: fields of ProxySettings, of several types, that pydantic validates.
    return ProxySettings(**{"model_dir": str(MODEL_DIR), "redis_url": server.url, **settings})


def test_400_concurrent_submits_wait_for_a_pooled_connection_instead_of_failing(
    server: RedisServer,
) -> None:
    # 400 at once over a pool of 10 connections: below the in-flight limit, all wait their turn
    # (a wait for a connection longer than the Redis timeout would be a 503: 10 s here, as the
    # machine running the test may be busy).
    settings = _proxy(
        server, redis_max_connections=10, redis_max_in_flight=1000, redis_timeout_seconds=10
    )
    with served(create_app(settings)) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="proxy ready")
        answers = _burst(url, 400)

    refused = [r.text for r in answers if r.status_code != 202]
    assert not refused, refused[:3]
    store = redis.Redis.from_url(server.url)
    assert store.llen("predictions") == 400
    assert len({r.json()["job_id"] for r in answers}) == 400


def test_submits_past_the_in_flight_limit_are_shed_at_once_with_retry_after(
    server: RedisServer,
) -> None:
    # A long Redis timeout: on a loaded machine the five in flight may wait past the default 2 s
    # for one of the two connections, and would be 503s of another kind.
    settings = _proxy(
        server, redis_max_connections=2, redis_max_in_flight=5, redis_timeout_seconds=15
    )
    with served(create_app(settings)) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="proxy ready")
        # Redis holds every write for a second: the first five submits wait in flight.
        redis.Redis.from_url(server.url).client_pause(1000, all=False)
        answers = _burst(url, 20)

    statuses = [r.status_code for r in answers]
    assert statuses.count(202) == 5
    shed = [r for r in answers if r.status_code == 503]
    assert len(shed) == 15
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert "5 Redis calls in flight" in shed[0].json()["detail"]


def test_the_first_submits_after_a_redis_restart_all_succeed(server: RedisServer) -> None:
    with served(create_app(_proxy(server))) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="proxy ready")
        warm = _burst(url, 32)  # fills the pool with connections that the restart makes stale
        server.stop()
        server.start()
        after = _burst(url, 32)

    assert [r.status_code for r in warm] == [202] * 32
    assert [r.status_code for r in after] == [202] * 32, [r.text for r in after][:3]
    # This server keeps no AOF, so the restart emptied it: the 32 later submits, each once.
    assert redis.Redis.from_url(server.url).llen("predictions") == 32


def test_a_submit_sent_twice_by_a_retry_is_recorded_once(server: RedisServer) -> None:
    store = redis.Redis.from_url(server.url)
    submit = store.register_script(jobs.SUBMIT)
    job_id = jobs.new_job_id()
    message = jobs.task_message("predictions", job_id, [SETOSA], "r")
    keys = ["predictions", jobs.job_key(job_id), jobs.PENDING]
    args: list[str | float] = [10, 60, message, "r", time.time(), job_id]

    first = submit(keys=keys, args=args)
    store.hset(jobs.job_key(job_id), "attempts", 1)  # a worker started it meanwhile
    again = submit(keys=keys, args=args)

    assert first == again == 1
    assert store.llen("predictions") == 1
    assert store.hget(jobs.job_key(job_id), "attempts") == b"1"


def test_after_a_burst_cut_by_the_redis_timeout_the_proxy_submits_again(
    server: RedisServer,
) -> None:
    # The burst that wedged the HTTP client's pool for good, on the Redis client's: 1,000
    # submits while Redis holds every write for 2 s, each cut by the 0.5 s Redis timeout.
    settings = _proxy(server, redis_timeout_seconds=0.5)
    with served(create_app(settings)) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="proxy ready")
        redis.Redis.from_url(server.url).client_pause(2000, all=False)
        during = [r.status_code for r in _burst(url, 1000)]
        after = wait_until(
            lambda: (codes := [r.status_code for r in _burst(url, 20)]) == [202] * 20 and codes,
            timeout=30,
            what="20 submits in a row accepted once the pause is over",
        )
        health = httpx2.get(f"{url}/health")

    assert 503 in during and set(during) <= {202, 503}  # cut or shed, never a 500 or a hang
    assert after == [202] * 20
    assert health.status_code == 200


def test_health_fails_while_the_redis_pool_holds_a_connection_no_request_holds(
    server: RedisServer,
) -> None:
    # A pool whose connections are all held by nobody can never send again: only a restart
    # helps, so liveness says so (after the grace period, 0 here) and names the pool.
    app = create_app(
        ProxySettings(model_dir=str(MODEL_DIR), redis_url=server.url, leak_grace_seconds=0)
    )
    orphan = RedisConnection()
    with ready_client(app) as client:
        well = client.get("/health")
        app.state.redis_pool._in_use_connections.add(orphan)
        sick = client.get("/health")
        app.state.redis_pool._in_use_connections.discard(orphan)
        again = client.get("/health")

    assert (well.status_code, sick.status_code, again.status_code) == (200, 503, 200)
    assert "redis pool: 1 of 50 pooled connections held by no call" in sick.text
