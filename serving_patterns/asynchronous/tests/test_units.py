"""Unit tests of the pieces with no process of their own: the task message, the sink, settings,
the worker's handling of its own bugs."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pydantic import ValidationError
from redis import Redis
from sqlalchemy import create_engine, select, text

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.settings import WorkerSettings
from serving_patterns.asynchronous.sink import connect, inferences, write
from serving_patterns.asynchronous.worker import Job, Runtime
from shared.localmode import RedisServer

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


def test_a_bug_after_the_prediction_fails_the_job_with_its_reason_instead_of_leaving_it_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = RedisServer(["redis-server"], None)
    try:
        store = Redis.from_url(server.url, decode_responses=True)
        store.register_script(jobs.SUBMIT)(
            keys=["q", jobs.job_key("j1")], args=[10, 60, "message", "r1", 1767225600.0]
        )
        runtime = Runtime(WorkerSettings(model_dir=str(MODEL_DIR), redis_url=server.url))
        runtime.load()
        # Something the job record cannot hold: the bug is in the worker's code, not the model.
        monkeypatch.setattr(runtime, "predict", lambda rows: [{"label": object()}])

        runtime.run(task=Any, job=Job("j1", [ROW], "r1", worker="worker@w1"))  # type: ignore[arg-type]

        record = store.hgetall(jobs.job_key("j1"))
        dead = [json.loads(letter) for letter in store.lrange(jobs.DEAD_LETTERS, 0, -1)]
    finally:
        server.close()

    assert record["status"] == "failed"
    assert record["error"].startswith("internal error: TypeError")
    assert [letter["job_id"] for letter in dead] == ["j1"]
