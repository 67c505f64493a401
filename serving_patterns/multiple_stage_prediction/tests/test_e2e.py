"""End to end: the API, a Celery worker and a private redis-server, started from compose.yaml
through local mode, over HTTP. Each test sets the heavy model's injected slowness and failure
through compose's ${VAR} interpolation, as a user would.
"""

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis

from shared.testing import LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
WORKER = "MULTIPLE_STAGE_PREDICTION_WORKER_"

pytestmark = pytest.mark.e2e


def _predict(url: str, rows: list[list[float]], request_id: str) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = httpx2.post(
        f"{url}/predict", json={"data": rows}, headers={"X-Request-ID": request_id}
    )
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json(), seconds


def _job(url: str, job_id: str) -> dict[str, Any]:
    response = httpx2.get(f"{url}/jobs/{job_id}")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _finished(url: str, job_id: str) -> dict[str, Any] | None:
    answer = _job(url, job_id)
    return answer if answer["status"] != "pending" else None


def _heavy_answer_of(url: str, job_id: str) -> dict[str, Any]:
    return wait_until(lambda: _finished(url, job_id), timeout=20, what=f"job {job_id} finished")


def _started_in(p: LocalPattern, job_id: str) -> int | None:
    """The pid of the pool process running the job, once it has started (task_track_started)."""
    raw = redis.Redis.from_url(p.service_url("redis")).get(f"celery-task-meta-{job_id}")
    meta = json.loads(raw) if raw else {}
    return meta["result"]["pid"] if meta.get("status") == "STARTED" else None


def test_the_light_answer_does_not_wait_for_a_slow_heavy_model_whose_answer_comes_later() -> None:
    with pattern_running(PATTERN, **{f"{WORKER}DELAY_SECONDS": "4"}) as p:
        url = p.url("api")
        light, light_seconds = _predict(url, [SETOSA, VIRGINICA], "e2e-slow")
        submitted = time.perf_counter()
        first = _job(url, light["job_id"])
        running = wait_until(
            lambda: (a := _job(url, light["job_id"]))["state"] == "STARTED" and a,
            timeout=10,
            what="the heavy job running",
        )
        heavy = _heavy_answer_of(url, light["job_id"])
        heavy_seconds = time.perf_counter() - submitted

    assert light_seconds < 2  # the heavy model takes 4 s (the margin is for a loaded machine)
    assert [p["label"] for p in light["predictions"]] == ["setosa", "virginica"]
    assert light["heavy_status"] == "pending"
    assert first["status"] == running["status"] == "pending"  # queued, then running
    assert heavy_seconds >= 4
    assert heavy["status"] == "done"
    # Both answers are for the same input, joined by the request id (and the job id).
    assert heavy["data"] == [SETOSA, VIRGINICA]
    assert heavy["request_id"] == light["request_id"] == "e2e-slow"
    assert [p["label"] for p in heavy["predictions"]] == ["setosa", "virginica"]
    assert heavy["model_version"] == "1.0.0"


def test_a_failing_heavy_model_never_breaks_the_light_answer_and_its_job_reports_the_failure() -> (
    None
):
    with pattern_running(PATTERN, **{f"{WORKER}FAILURE_RATE": "1"}) as p:
        url = p.url("api")
        answers = [_predict(url, [SETOSA], f"e2e-fail-{i}")[0] for i in range(3)]
        failed = [_heavy_answer_of(url, a["job_id"]) for a in answers]
        worker_logs = p.logs("worker")

    assert all(a["predictions"][0]["label"] == "setosa" for a in answers)
    assert all(a["heavy_status"] == "pending" for a in answers)
    for answer in failed:
        assert answer["status"] == "failed"
        assert answer["state"] == "FAILURE"
        assert answer["predictions"] is None
        assert answer["error"] == (f"HeavyModelError: injected failure ({WORKER}FAILURE_RATE=1)")
    # The worker's log of each failure carries the submit's request id.
    failures = [json.loads(line) for line in worker_logs.splitlines() if "HeavyModelError" in line]
    assert {"e2e-fail-0", "e2e-fail-1", "e2e-fail-2"} <= {f.get("request_id") for f in failures}


def test_a_pool_process_killed_mid_job_loses_no_job() -> None:
    # reject_on_worker_lost: the worker's parent sees its pool process die and requeues the
    # job's message at once (without it, the job would be FAILURE: WorkerLostError).
    with pattern_running(PATTERN, **{f"{WORKER}DELAY_SECONDS": "2"}) as p:
        url = p.url("api")
        light, _ = _predict(url, [VIRGINICA], "e2e-child-kill")
        pid = wait_until(lambda: _started_in(p, light["job_id"]), timeout=10, what="job start")
        os.kill(pid, signal.SIGKILL)
        again = wait_until(
            lambda: (p2 := _started_in(p, light["job_id"])) not in (None, pid) and p2,
            timeout=15,
            what="the job running again in another pool process",
        )
        heavy = _heavy_answer_of(url, light["job_id"])

    assert again != pid
    assert heavy["status"] == "done"
    assert heavy["predictions"][0]["label"] == "virginica"
    assert heavy["request_id"] == "e2e-child-kill"


def test_a_worker_killed_mid_job_loses_no_job_another_worker_runs_it() -> None:
    # acks late: the killed worker never acknowledged the message, so it waits in Redis's
    # unacknowledged set; past the visibility timeout a live worker puts it back on the queue.
    with pattern_running(
        PATTERN,
        **{
            f"{WORKER}DELAY_SECONDS": "2",
            f"{WORKER}VISIBILITY_TIMEOUT_SECONDS": "5",
            f"{WORKER}RESTORE_INTERVAL_SECONDS": "1",
        },
    ) as p:
        url = p.url("api")
        light, _ = _predict(url, [SETOSA], "e2e-worker-kill")
        wait_until(lambda: _started_in(p, light["job_id"]), timeout=10, what="job start")
        p.kill("worker")  # SIGKILL to the worker and its pool processes: the node is gone
        killed_at = time.perf_counter()
        assert _job(url, light["job_id"])["state"] == "STARTED"  # stuck: nobody runs it now
        p.start_replica("worker")
        heavy = wait_until(lambda: _finished(url, light["job_id"]), timeout=40, what="heavy")
        seconds = time.perf_counter() - killed_at
        second_worker = p.logs("worker").split("local mode: killed by SIGKILL")[-1]

    assert heavy["status"] == "done"
    assert heavy["predictions"][0]["label"] == "setosa"
    assert seconds >= 2  # it ran again from the start, in the new worker
    assert "heavy prediction in" in second_worker
