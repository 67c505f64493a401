"""End to end: proxy, Celery workers, sink and a private redis-server, started from compose.yaml
through local mode, over HTTP. Each test sets the knobs it needs (model delay, attempts,
visibility timeout) through compose's ${VAR} interpolation, as a user would.
"""

import asyncio
import json
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
import redis
from sqlalchemy import Row, create_engine, select

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.sink import inferences
from shared.testing import LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
REPO = PATTERN.parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
POISON = [3e38, 3e38, 3e38, 3e38]  # finite, within float32, but the model's scores overflow

pytestmark = pytest.mark.e2e


def _submit(url: str, rows: list[list[float]], request_id: str | None = None) -> str:
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = httpx2.post(f"{url}/predict", json={"data": rows}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _finished(url: str, job_ids: list[str]) -> list[dict[str, Any]] | None:
    answers = [httpx2.get(f"{url}/jobs/{job_id}").json() for job_id in job_ids]
    return answers if all(a["status"] != "pending" for a in answers) else None


def _table(database_url: str) -> list[Row[*tuple[Any, ...]]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(inferences)).all())
    finally:
        engine.dispose()


def _variables(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {"ASYNCHRONOUS_SINK_DATABASE_URL": f"sqlite:///{tmp_path}/inferences.db", **overrides}


def test_submit_returns_a_job_id_long_before_the_model_answers_then_polling_shows_the_result(
    tmp_path: Path,
) -> None:
    with pattern_running(
        PATTERN, **_variables(tmp_path, ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="5.0")
    ) as p:
        url = p.url("proxy")
        started = time.perf_counter()
        job_id = _submit(url, [SETOSA], request_id="e2e-slow-1")
        submit_seconds = time.perf_counter() - started
        first = httpx2.get(f"{url}/jobs/{job_id}").json()
        done = wait_until(lambda: _finished(url, [job_id]), timeout=20, what="the job")[0]

    assert submit_seconds < 2.5  # the model takes 5 s (the margin is for a loaded machine)
    assert first["status"] == "pending"
    assert done["status"] == "done"
    assert done["predictions"][0]["label"] == "setosa"
    assert done["finished_at"] - done["started_at"] >= 5.0
    assert done["request_id"] == "e2e-slow-1"


def test_finished_jobs_land_in_the_inference_table_without_anyone_polling(tmp_path: Path) -> None:
    variables = _variables(tmp_path)
    with pattern_running(PATTERN, **variables) as p:
        job_ids = {_submit(p.url("proxy"), [SETOSA], request_id=f"table-{i}") for i in range(5)}
        # No GET /jobs: the table is where the results go, and another consumer reads them.
        rows = wait_until(
            lambda: (
                r if len(r := _table(variables["ASYNCHRONOUS_SINK_DATABASE_URL"])) == 5 else None
            ),
            timeout=20,
            what="five rows in the inference table",
        )

    assert {r.job_id for r in rows} == job_ids
    assert {r.request_id for r in rows} == {f"table-{i}" for i in range(5)}
    assert all(r.predictions[0]["label"] == "setosa" for r in rows)


def test_poison_input_fails_after_the_configured_attempts_into_the_dead_letters(
    tmp_path: Path,
) -> None:
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_MAX_ATTEMPTS="3",
        ASYNCHRONOUS_WORKER_RETRY_BACKOFF_SECONDS="0.05",
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        poison = _submit(url, [POISON], request_id="poison-1")
        good = _submit(url, [SETOSA])
        failed, fine = wait_until(lambda: _finished(url, [poison, good]), timeout=20)
        # Were it retried again, a 4th attempt would be queued or taken after the failure: the
        # queue and the workers' hands empty, and no message left for it, settle that.
        store = redis.Redis.from_url(p.service_url("redis"))
        wait_until(
            lambda: store.llen("predictions") == 0 and store.hlen("unacked") == 0,
            timeout=10,
            what="no message left in the queue or held by a worker",
        )
        again = httpx2.get(f"{url}/jobs/{poison}").json()
        letters = httpx2.get(f"{url}/dead-letters").json()
        worker_logs = p.logs("worker")

    assert failed["status"] == "failed"
    assert failed["attempts"] == 3
    assert "out of the model's numeric range" in failed["error"]
    assert again["attempts"] == 3  # not retried forever
    assert [(d["job_id"], d["rows"], d["attempts"]) for d in letters] == [(poison, [POISON], 3)]
    assert letters[0]["request_id"] == "poison-1"
    assert fine["status"] == "done"
    # The worker logs JSON lines, and those about the job carry the submit's request id.
    records = [json.loads(line) for line in worker_logs.splitlines() if line.startswith("{")]
    about_poison = [r for r in records if poison in r["message"]]
    assert len(about_poison) == 3  # two retries, one failure
    assert {r["request_id"] for r in about_poison} == {"poison-1"}


def test_no_job_is_lost_or_finished_twice_when_a_worker_is_killed_holding_jobs(
    tmp_path: Path,
) -> None:
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_REPLICAS="1",
        # The first worker's model is slow enough that the kill always lands while it predicts;
        # the worker started after the kill is fast.
        ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="60",
        ASYNCHRONOUS_WORKER_VISIBILITY_TIMEOUT_SECONDS="2",
        ASYNCHRONOUS_WORKER_RESTORE_INTERVAL_SECONDS="0.5",
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        job_ids = [_submit(url, [SETOSA]) for _ in range(5)]
        held = wait_until(lambda: _running(url, job_ids), timeout=10, what="a job being predicted")
        p.kill("worker", 0)  # SIGKILL: no chance to give its job back
        p.start_replica("worker", ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="0")
        p.wait_healthy("worker", 1)
        answers = wait_until(lambda: _finished(url, job_ids), timeout=40, what="every job")
        rows = wait_until(
            lambda: (
                r if len(r := _table(variables["ASYNCHRONOUS_SINK_DATABASE_URL"])) >= 5 else None
            ),
            timeout=20,
        )

    assert len(held) == 1  # one worker, one job at a time
    assert all(a["status"] == "done" for a in answers)
    by_id = {a["job_id"]: a for a in answers}
    assert all(by_id[job_id]["attempts"] == 2 for job_id in held)  # run again after the kill
    assert all(by_id[job_id]["worker"] == "worker@worker-2" for job_id in held)
    assert sorted(r.job_id for r in rows) == sorted(job_ids)  # each exactly once


def test_a_job_whose_message_a_worker_took_but_never_recorded_is_run_once_all_the_same(
    tmp_path: Path,
) -> None:
    # kombu's window: a worker pops a message (BRPOP) and records it as unacknowledged in a
    # second call; Redis stopping, or the worker dying, in between leaves the message nowhere.
    # Here the taker is this test, which pops the message and drops it, before any worker runs.
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_REPLICAS="0",
        ASYNCHRONOUS_WORKER_SWEEP_SECONDS="0.2",
        ASYNCHRONOUS_WORKER_LOST_AFTER_SECONDS="0.5",
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        store = redis.Redis.from_url(p.service_url("redis"))
        lost, kept = _submit(url, [SETOSA]), _submit(url, [SETOSA])
        popped = store.brpop(["predictions"], timeout=5)  # the oldest: `lost`'s
        assert popped is not None
        _, message = popped
        assert lost.encode() in message and store.hlen("unacked") == 0
        p.start_replica("worker")
        answers = wait_until(lambda: _finished(url, [lost, kept]), timeout=30, what="both jobs")
        record = store.hgetall(jobs.job_key(lost))
        rows = wait_until(
            lambda: (
                r if len(r := _table(variables["ASYNCHRONOUS_SINK_DATABASE_URL"])) >= 2 else None
            ),
            timeout=20,
        )

    assert [a["status"] for a in answers] == ["done", "done"]
    assert answers[0]["attempts"] == 1  # lost before any run, so run once
    assert record[b"requeued"] == b"1" and b"message" not in record
    assert sorted(r.job_id for r in rows) == sorted([lost, kept])


def test_two_workers_holding_the_same_job_finish_it_once(tmp_path: Path) -> None:
    # A visibility timeout shorter than the job: while the first worker still predicts, the
    # message goes back to the queue and the second worker runs the job too.
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="3",
        ASYNCHRONOUS_WORKER_VISIBILITY_TIMEOUT_SECONDS="1",
        ASYNCHRONOUS_WORKER_RESTORE_INTERVAL_SECONDS="0.25",
        ASYNCHRONOUS_WORKER_MAX_ATTEMPTS="10",  # redeliveries, not failures: none may end the job
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        job_id = _submit(url, [SETOSA])
        twice = wait_until(
            lambda: (a := httpx2.get(f"{url}/jobs/{job_id}").json())["attempts"] >= 2 and a,
            timeout=20,
            what="a second worker running the job",
        )
        first = wait_until(lambda: _finished(url, [job_id]), timeout=20, what="the job")[0]
        # Every start ends in a finish: one recorded, the others dropped (and logged so).
        dropped = f"job {job_id} was finished by another delivery"
        wait_until(
            lambda: p.logs("worker").count(dropped) == first["attempts"] - 1,
            timeout=20,
            what="the other deliveries' finishes, dropped",
        )
        last = httpx2.get(f"{url}/jobs/{job_id}").json()
        store = redis.Redis.from_url(p.service_url("redis"))
        wait_until(lambda: store.llen(jobs.RESULTS) == 0, timeout=10, what="the sink to drain")
        rows = _table(variables["ASYNCHRONOUS_SINK_DATABASE_URL"])

    assert twice["status"] == "pending"  # the second start came while the first still ran
    assert first["status"] == "done"
    assert last == first  # the later finish changed nothing the client sees
    assert [r.job_id for r in rows] == [job_id]


def _running(url: str, job_ids: list[str]) -> list[str]:
    answers = [httpx2.get(f"{url}/jobs/{job_id}").json() for job_id in job_ids]
    return [a["job_id"] for a in answers if a["status"] == "pending" and a["attempts"] > 0]


def test_a_redis_restart_loses_no_submitted_job(tmp_path: Path) -> None:
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="0.1",
        ASYNCHRONOUS_WORKER_VISIBILITY_TIMEOUT_SECONDS="3",
        ASYNCHRONOUS_WORKER_RESTORE_INTERVAL_SECONDS="0.5",
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        before = [_submit(url, [SETOSA]) for _ in range(20)]
        p.restart_infrastructure("redis")
        after = wait_until(lambda: _try_submit(url), timeout=20, what="a submit after the restart")
        answers = wait_until(lambda: _finished(url, [*before, after]), timeout=60)

    assert all(a["status"] == "done" for a in answers)


def _try_submit(url: str) -> str | None:
    response = httpx2.post(f"{url}/predict", json={"data": [SETOSA]})
    return response.json()["job_id"] if response.status_code == 202 else None


def test_two_workers_predict_at_the_same_time_so_there_is_no_global_order(tmp_path: Path) -> None:
    variables = _variables(tmp_path, ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="1.0")
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        # At once, and more than one worker takes: both have jobs queued while the other runs
        # one, however slowly the submits or a worker's start go.
        job_ids = _submit_many(url, 8)
        answers = wait_until(lambda: _finished(url, job_ids), timeout=60)

    assert {a["worker"] for a in answers} == {"worker@worker-1", "worker@worker-2"}
    overlapping = [
        (a, b)
        for a in answers
        for b in answers
        if a["worker"] < b["worker"]
        and a["started_at"] < b["finished_at"]
        and b["started_at"] < a["finished_at"]
    ]
    assert overlapping, "jobs on the two workers ran at the same time"


def test_one_worker_takes_jobs_in_the_order_they_were_submitted(tmp_path: Path) -> None:
    variables = _variables(
        tmp_path, ASYNCHRONOUS_WORKER_REPLICAS="1", ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="0.05"
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        job_ids = [_submit(url, [SETOSA]) for _ in range(6)]
        answers = wait_until(lambda: _finished(url, job_ids), timeout=20)

    starts = [a["started_at"] for a in answers]
    assert all(a < b for a, b in pairwise(starts))  # FIFO: the queue is a Redis list


def test_compose_file_runs_two_worker_replicas_by_default() -> None:
    services = LocalPattern(PATTERN, variables={}).services

    assert services["worker"].replicas == 2
    assert list(services) == ["redis", "proxy", "worker", "sink"]


def _probe(p: LocalPattern, name: str, index: int = 0) -> bool:
    """The service's compose healthcheck, run once with the replica's environment."""
    process, command = p.processes[name][index], p.services[name].healthcheck
    args = [sys.executable, *command[1:]] if command[0] == "python" else command
    return subprocess.run(args, env=process.env, cwd=REPO, capture_output=True).returncode == 0


def _all_finished(store: redis.Redis, job_ids: list[str]) -> list[bytes | None] | None:
    """Every job's status, once none is pending."""
    statuses = _statuses(store, job_ids)
    return None if b"pending" in statuses else statuses


def _lost(store: redis.Redis, job_ids: list[str]) -> list[str]:
    """Of these jobs, those whose message is neither queued nor held unacknowledged by a worker."""
    # bytes: the client does not decode responses (redis-py's types say bytes | str).
    queued = cast(list[bytes], store.lrange("predictions", 0, -1))
    carried = b"".join([*queued, *cast(list[bytes], store.hvals("unacked"))])
    return [j for j in job_ids if j.encode() not in carried]


def _statuses(store: redis.Redis, job_ids: list[str]) -> list[bytes | None]:
    pipe = store.pipeline()
    for job_id in job_ids:
        pipe.hget(jobs.job_key(job_id), "status")
    return list(pipe.execute())


@pytest.mark.parametrize(
    ("pool", "outage_seconds"),
    [("solo", 30), ("threads", 10), ("prefork", 10)],
)
def test_workers_consume_again_by_themselves_after_redis_is_down_with_jobs_queued(
    tmp_path: Path, pool: str, outage_seconds: float
) -> None:
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_POOL=pool,
        ASYNCHRONOUS_WORKER_CONCURRENCY="1" if pool == "solo" else "2",
        # Slow enough that jobs are queued, and some held by workers, when Redis stops, also
        # when the submits are slowed by a busy machine (4 threads take 300 jobs in 7.5 s).
        ASYNCHRONOUS_WORKER_MODEL_DELAY_SECONDS="0.1",
        ASYNCHRONOUS_WORKER_VISIBILITY_TIMEOUT_SECONDS="3",
        ASYNCHRONOUS_WORKER_RESTORE_INTERVAL_SECONDS="0.5",
        ASYNCHRONOUS_WORKER_HEARTBEAT_SECONDS="1",
        # A message taken in the instant Redis stopped is queued again soon after.
        ASYNCHRONOUS_WORKER_SWEEP_SECONDS="0.5",
        ASYNCHRONOUS_WORKER_LOST_AFTER_SECONDS="1",
    )
    with pattern_running(PATTERN, **variables) as p:
        url = p.url("proxy")
        job_ids = _submit_many(url, 300)
        store = redis.Redis.from_url(p.service_url("redis"))
        queued = store.llen("predictions")
        p.stop_infrastructure("redis")  # SIGTERM; the AOF keeps the queue and the records
        down_until = time.monotonic() + outage_seconds
        # Health follows consumption: no worker beats while it cannot reach Redis.
        wait_until(
            lambda: not any(_probe(p, "worker", i) for i in range(2)),
            timeout=outage_seconds,
            what="every worker unhealthy while Redis is down",
        )
        time.sleep(max(0.0, down_until - time.monotonic()))  # the outage itself, not a wait
        p.restart_infrastructure("redis")  # same port, same data
        later = _submit_after_restart(url)
        everything = [*job_ids, later]

        try:
            statuses = wait_until(
                lambda: _all_finished(store, everything),
                timeout=90,
                interval=0.5,
                what="every job finished, with no manual step",
            )
        except AssertionError:
            left = [
                j
                for j, s in zip(everything, _statuses(store, everything), strict=True)
                if s == b"pending"
            ]
            records = [store.hgetall(jobs.job_key(j)) for j in left[:3]]
            raise AssertionError(
                f"{len(left)} jobs pending, e.g. {records}; queue {store.llen('predictions')}, "
                f"unacked {store.hlen('unacked')}, lost {_lost(store, left)}\n"
                f"{p.logs('worker')[-4000:]}"
            ) from None
        for index in range(2):
            p.wait_healthy("worker", index)
        done = [j for j, s in zip(everything, statuses, strict=True) if s == b"done"]
        rows = wait_until(
            lambda: (
                r
                if len(r := _table(variables["ASYNCHRONOUS_SINK_DATABASE_URL"])) >= len(done)
                else None
            ),
            timeout=30,
            what="every job in the inference table",
        )

    assert queued > 0  # the outage began with jobs waiting
    assert set(statuses) == {b"done"}
    assert sorted(r.job_id for r in rows) == sorted(everything)  # each exactly once


def _submit_many(url: str, n: int) -> list[str]:
    """n one-row jobs, submitted over 20 connections at once (faster than the workers take them)."""

    async def burst() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=20)
        async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"data": [SETOSA]}) for _ in range(n))
            )

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [202] * n
    return [str(r.json()["job_id"]) for r in answers]


def _submit_after_restart(url: str) -> str:
    return wait_until(lambda: _try_submit(url), timeout=20, what="a submit after the restart")


def test_a_stalled_worker_or_sink_is_unhealthy_until_it_runs_again(tmp_path: Path) -> None:
    variables = _variables(
        tmp_path,
        ASYNCHRONOUS_WORKER_REPLICAS="1",
        ASYNCHRONOUS_WORKER_HEARTBEAT_SECONDS="1",
        ASYNCHRONOUS_SINK_HEARTBEAT_SECONDS="1",
    )
    with pattern_running(PATTERN, **variables) as p:
        healthy_before = [_probe(p, "worker"), _probe(p, "sink")]
        for name in ("worker", "sink"):
            p.processes[name][0].signal(signal.SIGSTOP)  # stuck: its loop runs no more
        try:
            wait_until(
                lambda: not _probe(p, "worker") and not _probe(p, "sink"),
                timeout=15,
                what="the stalled worker and sink unhealthy",
            )
        finally:
            for name in ("worker", "sink"):
                p.processes[name][0].signal(signal.SIGCONT)
        p.wait_healthy("worker")
        p.wait_healthy("sink")
        job_id = _submit(p.url("proxy"), [SETOSA])
        done = wait_until(lambda: _finished(p.url("proxy"), [job_id]), timeout=20)[0]

    assert healthy_before == [True, True]
    assert done["status"] == "done"
