"""Unit tests of the pieces with no process of their own: the task message, the sink, settings,
the worker's handling of its own bugs."""

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Reject
from celery.result import EagerResult
from pydantic import ValidationError
from redis import Redis
from sqlalchemy import create_engine, select
from sqlalchemy.exc import ArgumentError

from serving_patterns.asynchronous import jobs, worker
from serving_patterns.asynchronous.settings import SinkSettings, WorkerSettings
from serving_patterns.asynchronous.sink import connect, inferences, write
from serving_patterns.asynchronous.sink import run as run_sink
from serving_patterns.asynchronous.worker import Runtime
from shared.testing import RedisServer, wait_until

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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sink_keeps_one_row_per_job_when_a_batch_is_written_twice(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
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
def store(redis_server: RedisServer) -> Redis:
    return Redis.from_url(redis_server.url, decode_responses=True)


def _runtime(store: Redis, **settings: Any) -> Runtime:
    url = "redis://{host}:{port}/0".format(**store.connection_pool.connection_kwargs)
    return Runtime(WorkerSettings(model_dir=str(MODEL_DIR), redis_url=url, **settings))


def _submitted(store: Redis, job_id: str, queue: str = "queue") -> str:
    """Submit a job as the proxy does: its record pending, its message queued. The message."""
    message = jobs.task_message(queue, job_id, [ROW], "r1")
    submit = store.register_script(jobs.SUBMIT)
    keys = [queue, jobs.job_key(job_id), jobs.PENDING]
    assert submit(keys=keys, args=[10, 60, message, "r1", 1767225600.0, job_id]) > 0
    return message


def _run(runtime: Runtime, job_id: str) -> EagerResult:
    """The worker's real Celery task, run in this process (as a worker runs it, minus the queue)."""
    app = worker.create_celery(runtime.settings, runtime)
    kwargs = {"job_id": job_id, "rows": [ROW], "request_id": "r1"}
    return app.tasks[jobs.TASK_NAME].apply(kwargs=kwargs)


def _dead_letters(store: Redis) -> list[dict[str, Any]]:
    return [json.loads(letter) for letter in store.lrange(jobs.DEAD_LETTERS, 0, -1)]


def test_a_bug_after_the_prediction_fails_the_job_with_its_reason_instead_of_leaving_it_pending(
    store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    _submitted(store, "j1")
    runtime = _runtime(store)
    runtime.load()
    # Something the job record cannot hold: the bug is in the worker's code, not the model.
    monkeypatch.setattr(runtime, "predict", lambda rows: [{"label": object()}])

    assert _run(runtime, "j1").state == "SUCCESS"  # acknowledged: the job's outcome is recorded

    record = store.hgetall(jobs.job_key("j1"))
    assert record["status"] == "failed"
    error = record["error"]
    assert isinstance(error, str) and error.startswith("internal error: TypeError")
    assert [letter["job_id"] for letter in _dead_letters(store)] == ["j1"]


def test_a_worker_that_cannot_load_its_model_gives_the_job_back_uncounted(
    store: Redis, tmp_path: Path
) -> None:
    _submitted(store, "j1")
    runtime = _runtime(store)
    runtime.settings = WorkerSettings(model_dir=str(tmp_path / "missing"))

    result = _run(runtime, "j1")

    assert result.state == "REJECTED"
    assert isinstance(result.result, Reject) and result.result.requeue is True  # back on the queue
    record = store.hgetall(jobs.job_key("j1"))
    assert (record["status"], record["attempts"]) == ("pending", "0")


def test_a_job_waits_for_redis_then_the_worker_exits_non_zero_instead_of_giving_it_back(
    store: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reject or an ack needs Redis too, and one that fails leaves the consumer stuck: past
    # the wait the process ends, and the message comes back after the visibility timeout.
    _submitted(store, "j1")
    runtime = _runtime(store, redis_outage_seconds=0.5)
    runtime.load()
    store.shutdown(nosave=True)
    exits: list[int] = []

    def exit_(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_)  # the worker's way out
    started = time.monotonic()
    with pytest.raises(SystemExit):
        _run(runtime, "j1")

    assert exits == [worker.EXIT_REDIS_AWAY] and worker.EXIT_REDIS_AWAY != 0
    assert time.monotonic() - started >= 0.5  # it waited for Redis first


def test_a_second_finish_of_the_same_job_changes_nothing(store: Redis) -> None:
    # Two workers can hold one job (a visibility timeout shorter than the job): first one wins.
    _submitted(store, "j1")
    finish = store.register_script(jobs.FINISH)
    key, keys = jobs.job_key("j1"), [jobs.job_key("j1"), jobs.PENDING, jobs.RESULTS]

    first = finish(keys=keys, args=["j1", '{"n":1}', 0, "status", "done", "worker", "a"])
    second = finish(keys=keys, args=["j1", '{"n":2}', 0, "status", "done", "worker", "b"])

    assert (first, second) == (1, 0)
    assert store.hget(key, "worker") == "a"
    assert store.lrange(jobs.RESULTS, 0, -1) == ['{"n":1}']
    assert not store.hexists(key, "message")  # a finished job's record drops its input
    assert not store.sismember(jobs.PENDING, "j1")


def test_without_a_sink_finished_jobs_are_recorded_but_not_queued_for_it(store: Redis) -> None:
    _submitted(store, "j1")
    runtime = _runtime(store, results_to_sink=False)

    _run(runtime, "j1")

    assert store.hget(jobs.job_key("j1"), "status") == "done"
    assert store.llen(jobs.RESULTS) == 0


def test_a_job_whose_worker_died_on_the_last_attempt_shows_the_same_count_everywhere(
    store: Redis,
) -> None:
    _submitted(store, "j1")
    runtime = _runtime(store, max_attempts=3)
    store.hset(jobs.job_key("j1"), "attempts", 3)  # attempt 3 started, its worker was killed

    _run(runtime, "j1")

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


def _sweep(store: Redis, lost_after_seconds: float = 0) -> list[int]:
    """One sweep, with a chunk of 2 messages: [jobs queued again, jobs whose message is missing]."""
    return jobs.sweep(store, "queue", lost_after_seconds, chunk=2)


def _taken(store: Redis, tag: str | None = None) -> str:
    """A worker takes the oldest message (BRPOP); with a tag, kombu records it as unacked."""
    popped = store.brpop(["queue"], timeout=1)
    assert popped is not None
    _, message = popped
    assert isinstance(message, str)  # the store decodes responses
    if tag is not None:  # kombu's record of it: [message, exchange, routing key], re-encoded
        store.hset(jobs.UNACKED, tag, json.dumps([json.loads(message), "", "queue"]))
    return message


def test_a_job_whose_message_was_taken_but_never_recorded_is_queued_again_once(
    store: Redis,
) -> None:
    message = _submitted(store, "j1")
    _taken(store)  # kombu's window: popped, then Redis stopped before it was recorded

    first = _sweep(store)  # missing once may be the instant between kombu's two calls
    second = _sweep(store)
    third = _sweep(store)

    assert (first, second, third) == ([0, 1], [1, 0], [0, 0])
    [again] = store.lrange("queue", 0, -1)
    # The same task, with a delivery tag of its own.
    assert json.loads(again)["body"] == json.loads(message)["body"]
    assert json.loads(again)["properties"]["delivery_tag"] == "j1-requeued-1"
    assert store.hget(jobs.job_key("j1"), "requeued") == "1"


def test_a_missing_message_is_queued_again_only_after_the_grace(store: Redis) -> None:
    _submitted(store, "j1")
    _taken(store)

    assert _sweep(store, lost_after_seconds=60) == [0, 1]
    assert _sweep(store, lost_after_seconds=60) == [0, 1]
    assert store.llen("queue") == 0


def test_a_message_found_again_clears_its_job_from_the_missing(store: Redis) -> None:
    _submitted(store, "j1")
    _submitted(store, "j2")
    message = _taken(store)
    _taken(store)
    assert _sweep(store, lost_after_seconds=60) == [0, 2]

    store.rpush("queue", message)  # j1's was in the instant between kombu's two calls after all

    assert _sweep(store, lost_after_seconds=60) == [0, 1]
    assert store.hkeys(jobs.MISSING) == ["j2"]


def test_jobs_whose_message_is_queued_or_held_by_a_worker_are_left_alone(store: Redis) -> None:
    for job_id in ("held", "lost", "done", *(f"queued-{i}" for i in range(5))):
        _submitted(store, job_id)
    _taken(store, tag="tag-1")  # a worker holds "held", unacknowledged
    _taken(store)  # "lost" popped, never recorded
    _taken(store)  # "done" taken, finished and acknowledged:
    finish = store.register_script(jobs.FINISH)
    finish(keys=[jobs.job_key("done"), jobs.PENDING], args=["done", "{}", 0, "status", "done"])

    assert _sweep(store) == [0, 1]  # only "lost" is missing (the queue read 2 at a time)
    assert store.smembers(jobs.PENDING) == {"held", "lost", *(f"queued-{i}" for i in range(5))}
    assert store.hkeys(jobs.MISSING) == ["lost"]


def test_sweeping_reads_no_message_while_every_pending_job_has_one(store: Redis) -> None:
    for i in range(3):
        _submitted(store, f"j{i}")
    _taken(store, tag="tag-1")

    store.hset(jobs.MISSING, "j0", 0)  # a job that went missing for an instant, long ago

    assert _sweep(store) == [0, 0]
    assert not store.exists(jobs.MISSING)


def test_an_expired_job_leaves_the_pending_set_at_the_next_sweep(store: Redis) -> None:
    _submitted(store, "j1")
    _taken(store)
    store.delete(jobs.job_key("j1"))  # its TTL ran out

    assert _sweep(store) == [0, 0]
    assert store.scard(jobs.PENDING) == 0
