"""Unit tests of the pieces with no process of their own: the task message, the sink, settings,
the worker's handling of its own bugs."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Reject
from pydantic import ValidationError
from redis import Redis
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import ArgumentError

from serving_patterns.asynchronous import jobs, worker
from serving_patterns.asynchronous.settings import SinkSettings, WorkerSettings
from serving_patterns.asynchronous.sink import connect, inferences, write
from serving_patterns.asynchronous.sink import run as run_sink
from serving_patterns.asynchronous.worker import Job, Runtime
from shared.localmode import RedisServer
from shared.testing import wait_until

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"

ROW = [5.1, 3.5, 1.4, 0.2]


def test_task_message_carries_what_celery_itself_would_send() -> None:
    celery = Celery("check", set_as_current=False)
    expected = celery.amqp.as_task_v2(
        "j1", jobs.TASK_NAME, kwargs={"job_id": "j1", "rows": [ROW], "request_id": "r1"}
    )

    message = json.loads(jobs.task_message("predictions", "j1", [ROW], "r1"))

    for field in ("lang", "task", "id", "root_id", "parent_id", "group", "retries", "eta"):
        assert message["headers"][field] == expected.headers[field], field
    assert set(expected.headers) <= set(message["headers"])
    args, kwargs, embed = json.loads(message["body"])
    assert (args, kwargs) == (list(expected.body[0]), expected.body[1])
    assert embed == expected.body[2]
    assert message["content-type"] == "application/json"
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "predictions"}
    assert "rows" not in message["headers"]["kwargsrepr"]  # logs name the job, not the input


def _record(job_id: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "request_id": "r1",
        "predictions": [{"label": "setosa", "probabilities": {"setosa": 1.0}}],
        "model_version": "1.0.0",
        "worker": "worker@w1",
        "submitted_at": 1767225600.0,
        "finished_at": 1767225600.5,
    }


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"async_sink_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no PostgreSQL on this machine: say so rather than fail
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not usable: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sink_keeps_one_row_per_job_when_a_batch_is_written_twice(
    backend: str, tmp_path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/db/inferences.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = connect(url)
    try:
        # A sink that died after writing but before trimming Redis writes the batch again.
        write(engine, [_record("a"), _record("b")])
        write(engine, [_record("b"), _record("c")])

        with engine.connect() as connection:
            rows = connection.execute(select(inferences).order_by(inferences.c.job_id)).all()
    finally:
        engine.dispose()

    assert [r.job_id for r in rows] == ["a", "b", "c"]
    assert rows[0].predictions[0]["label"] == "setosa"
    assert rows[0].finished_at.timestamp() == pytest.approx(1767225600.5)


def test_worker_settings_refuse_a_restore_interval_longer_than_the_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="restore_interval_seconds"):
        WorkerSettings(visibility_timeout_seconds=1, restore_interval_seconds=5)


@pytest.fixture
def store() -> Iterator[Redis]:
    server = RedisServer(["redis-server"], None)
    try:
        yield Redis.from_url(server.url, decode_responses=True)
    finally:
        server.close()


def _runtime(store: Redis, **settings: Any) -> Runtime:
    url = "redis://{host}:{port}/0".format(**store.connection_pool.connection_kwargs)
    return Runtime(WorkerSettings(model_dir=str(MODEL_DIR), redis_url=url, **settings))


def _submitted(store: Redis, job_id: str) -> Job:
    """A job as the proxy leaves it: its record pending, its message on the way to a worker."""
    submit = store.register_script(jobs.SUBMIT)
    submit(keys=["queue", jobs.job_key(job_id)], args=[10, 60, "message", "r1", 1767225600.0])
    return Job(job_id, [ROW], "r1", worker="worker@w1")


def _dead_letters(store: Redis) -> list[dict[str, Any]]:
    return [json.loads(letter) for letter in store.lrange(jobs.DEAD_LETTERS, 0, -1)]


def test_a_bug_after_the_prediction_fails_the_job_with_its_reason_instead_of_leaving_it_pending(
    store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, runtime = _submitted(store, "j1"), _runtime(store)
    runtime.load()
    # Something the job record cannot hold: the bug is in the worker's code, not the model.
    monkeypatch.setattr(runtime, "predict", lambda rows: [{"label": object()}])

    runtime.run(task=Any, job=job)  # type: ignore[arg-type]

    record = store.hgetall(jobs.job_key("j1"))
    assert record["status"] == "failed"
    assert record["error"].startswith("internal error: TypeError")
    assert [letter["job_id"] for letter in _dead_letters(store)] == ["j1"]


def test_a_worker_that_cannot_load_its_model_gives_the_job_back_uncounted(
    store: Redis, tmp_path: Path
) -> None:
    job, runtime = _submitted(store, "j1"), _runtime(store)
    runtime.settings = WorkerSettings(model_dir=str(tmp_path / "missing"))

    with pytest.raises(Reject) as rejected:
        runtime.run(task=Any, job=job)  # type: ignore[arg-type]

    assert rejected.value.requeue is True  # back on the queue, not acknowledged as done
    record = store.hgetall(jobs.job_key("j1"))
    assert (record["status"], record["attempts"]) == ("pending", "0")


def test_a_job_waits_for_redis_then_the_worker_exits_non_zero_instead_of_giving_it_back(
    store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reject or an ack needs Redis too, and one that fails leaves the consumer stuck: past
    # the wait the process ends, and the message comes back after the visibility timeout.
    job, runtime = _submitted(store, "j1"), _runtime(store, redis_outage_seconds=0.5)
    runtime.load()
    store.shutdown(nosave=True)
    exits: list[int] = []

    def exit_(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", exit_)
    started = time.monotonic()
    with pytest.raises(SystemExit):
        runtime.run(task=Any, job=job)  # type: ignore[arg-type]

    assert exits == [worker.EXIT_REDIS_AWAY] and worker.EXIT_REDIS_AWAY != 0
    assert time.monotonic() - started >= 0.5  # it waited for Redis first


def test_a_second_finish_of_the_same_job_changes_nothing(store: Redis) -> None:
    # Two workers can hold one job (a visibility timeout shorter than the job): first one wins.
    _submitted(store, "j1")
    finish = store.register_script(jobs.FINISH)
    key = jobs.job_key("j1")

    first = finish(keys=[key, jobs.RESULTS], args=['{"n":1}', 0, "status", "done", "worker", "a"])
    second = finish(keys=[key, jobs.RESULTS], args=['{"n":2}', 0, "status", "done", "worker", "b"])

    assert (first, second) == (1, 0)
    assert store.hget(key, "worker") == "a"
    assert store.lrange(jobs.RESULTS, 0, -1) == ['{"n":1}']


def test_without_a_sink_finished_jobs_are_recorded_but_not_queued_for_it(store: Redis) -> None:
    job, runtime = _submitted(store, "j1"), _runtime(store, results_to_sink=False)

    runtime.run(task=Any, job=job)  # type: ignore[arg-type]

    assert store.hget(jobs.job_key("j1"), "status") == "done"
    assert store.llen(jobs.RESULTS) == 0


def test_a_job_whose_worker_died_on_the_last_attempt_shows_the_same_count_everywhere(
    store: Redis,
) -> None:
    job, runtime = _submitted(store, "j1"), _runtime(store, max_attempts=3)
    store.hset(jobs.job_key("j1"), "attempts", 3)  # attempt 3 started, its worker was killed

    runtime.run(task=Any, job=job)  # type: ignore[arg-type]

    record = store.hgetall(jobs.job_key("j1"))
    assert (record["status"], record["attempts"]) == ("failed", "3")
    assert "gave up after 3 attempts" in record["error"]
    assert [letter["attempts"] for letter in _dead_letters(store)] == [3]


def test_the_sink_waits_for_a_database_that_is_not_there_yet(
    store: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "inferences.db"
    database.mkdir()  # a directory where the file should be: SQLite cannot open it
    store.rpush(jobs.RESULTS, json.dumps(_record("j1")))
    url = "redis://{host}:{port}/0".format(**store.connection_pool.connection_kwargs)
    settings = SinkSettings(redis_url=url, database_url=f"sqlite:///{database}")
    stop = threading.Event()
    sink = threading.Thread(target=run_sink, args=(settings, stop))
    sink.start()
    try:
        wait_until(lambda: "sink paused" in caplog.text, what="a failed connection")
        assert sink.is_alive()
        database.rmdir()  # the database comes up

        wait_until(lambda: store.llen(jobs.RESULTS) == 0, what="the sink to write the job")
    finally:
        stop.set()
        sink.join(timeout=10)

    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        assert connection.scalars(select(inferences.c.job_id)).all() == ["j1"]
    engine.dispose()


def test_the_sink_stops_on_a_database_url_that_can_never_work(store: Redis) -> None:
    url = "redis://{host}:{port}/0".format(**store.connection_pool.connection_kwargs)
    settings = SinkSettings(redis_url=url, database_url="postgressql://user@host/db")  # typo

    with pytest.raises(ArgumentError, match="postgressql"):
        run_sink(settings, threading.Event())
