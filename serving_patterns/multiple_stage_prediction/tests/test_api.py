"""In-process tests of the API with a private redis-server and no worker: the light answer, the
job it queues, the job states it reports, bad input, and Redis away."""

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from serving_patterns.multiple_stage_prediction import jobs
from serving_patterns.multiple_stage_prediction.api import create_app, heavy_answer
from serving_patterns.multiple_stage_prediction.settings import ApiSettings
from shared.testing import RedisServer, ready_client

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def _settings(server: RedisServer, **overrides: Any) -> ApiSettings:
    return ApiSettings(redis_url=server.url, model_dir=str(MODEL_DIR), max_rows=5, **overrides)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[TestClient]:
    with ready_client(create_app(_settings(redis_server))) as client:
        yield client


def _queued_messages(server: RedisServer) -> list[dict[str, Any]]:
    return [json.loads(m) for m in redis.Redis.from_url(server.url).lrange(jobs.QUEUE, 0, -1)]


def test_predict_answers_with_the_light_model_and_queues_the_same_rows_as_a_heavy_job(
    client: TestClient, redis_server: RedisServer
) -> None:
    response = client.post(
        "/predict", json={"data": [SETOSA, VIRGINICA]}, headers={"X-Request-ID": "light-1"}
    )

    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert body["model_version"] == "1.0.0"
    assert body["request_id"] == "light-1"
    assert body["heavy_status"] == "pending"
    [message] = _queued_messages(redis_server)
    assert message["headers"]["id"] == body["job_id"]
    assert message["headers"]["task"] == jobs.TASK_NAME
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))  # kombu: base64
    assert args == [[SETOSA, VIRGINICA]]
    assert kwargs == {"request_id": "light-1"}


def test_a_queued_job_reads_pending_with_its_input_and_the_submits_request_id(
    client: TestClient,
) -> None:
    job_id = client.post(
        "/predict", json={"data": [SETOSA]}, headers={"X-Request-ID": "light-2"}
    ).json()["job_id"]

    response = client.get(f"/jobs/{job_id}")

    assert response.status_code == 200
    assert response.json() == {
        "job_id": job_id,
        "status": "pending",
        "state": "QUEUED",
        "predictions": None,
        "model_version": None,
        "request_id": "light-2",
        "data": [SETOSA],
        "error": None,
    }


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/0123456789abcdef0123456789abcdef")

    assert response.status_code == 404
    assert response.json()["detail"] == (
        "no job 0123456789abcdef0123456789abcdef: never submitted, or expired"
    )


def test_a_running_job_is_pending_a_done_one_has_the_heavy_predictions_a_failed_one_its_reason(
    client: TestClient,
) -> None:
    # The states a worker writes, as Celery's backend decodes them.
    common = {"args": [[SETOSA]], "kwargs": {"request_id": "r-1"}}
    prediction = {"label": "setosa", "probabilities": {"setosa": 1.0}}

    running = heavy_answer("j", {"status": "STARTED", "result": {"pid": 7}, **common})
    done = heavy_answer(
        "j",
        {
            "status": "SUCCESS",
            "result": {"predictions": [prediction], "model_version": "1.0.0"},
            **common,
        },
    )
    failed = heavy_answer(
        "j", {"status": "FAILURE", "result": RuntimeError("out of memory"), **common}
    )

    assert (running.status, running.state, running.predictions) == ("pending", "STARTED", None)
    assert (done.status, done.model_version, done.error) == ("done", "1.0.0", None)
    assert done.predictions is not None and done.predictions[0].label == "setosa"
    assert (failed.status, failed.error, failed.predictions) == (
        "failed",
        "RuntimeError: out of memory",
        None,
    )
    assert {a.request_id for a in (running, done, failed)} == {"r-1"}


def test_predict_rejects_bad_input_naming_the_problem_and_queues_nothing(
    client: TestClient, redis_server: RedisServer
) -> None:
    narrow = client.post("/predict", json={"data": [[5.1, 3.5, 1.4]]})
    too_many = client.post("/predict", json={"data": [SETOSA] * 6})
    unscorable = client.post("/predict", json={"data": [[3e38, 3e38, 3e38, 3e38]]})
    not_json = client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})

    assert narrow.status_code == 422
    assert "expected 4 features" in narrow.json()["detail"][0]["msg"]
    assert too_many.status_code == 422
    assert "at most 5 rows" in too_many.json()["detail"][0]["msg"]
    assert unscorable.status_code == 422
    assert "numeric range" in unscorable.json()["detail"][0]["msg"]
    assert not_json.status_code == 422
    assert _queued_messages(redis_server) == []


def test_while_redis_is_down_the_light_answer_still_goes_out_saying_the_job_was_not_queued(
    redis_server: RedisServer,
) -> None:
    with ready_client(create_app(_settings(redis_server, redis_timeout_seconds=1))) as client:
        job_id = client.post("/predict", json={"data": [SETOSA]}).json()["job_id"]
        redis_server.stop()

        started = time.perf_counter()
        light = client.post("/predict", json={"data": [SETOSA]})
        light_seconds = time.perf_counter() - started
        heavy = client.get(f"/jobs/{job_id}")
        ready = client.get("/ready")

    assert light.status_code == 200
    assert light.json()["predictions"][0]["label"] == "setosa"
    assert light.json()["job_id"] is None
    assert light.json()["heavy_status"] == "not queued"
    assert light.json()["heavy_error"].startswith("heavy job not queued: ")
    assert light_seconds < 3  # the 1 s deadline, with room for a loaded machine
    assert heavy.status_code == 503
    assert heavy.headers["Retry-After"] == "1"
    assert heavy.json()["detail"].startswith("result backend unavailable: ")
    assert ready.status_code == 200  # the light model serves: stay in rotation


def test_sending_jobs_subscribes_to_nothing(client: TestClient, redis_server: RedisServer) -> None:
    # Celery's stock Redis backend SUBSCRIBEs to every job it sends and never reads the replies
    # of a client that polls: they would pile up in the API's socket (jobs.PollingRedisBackend).
    for _ in range(20):
        assert client.post("/predict", json={"data": [SETOSA]}).json()["job_id"]

    commands = redis.Redis.from_url(redis_server.url).info("commandstats")

    assert "cmdstat_set" in commands or "cmdstat_setex" in commands  # the QUEUED records
    assert "cmdstat_subscribe" not in commands
