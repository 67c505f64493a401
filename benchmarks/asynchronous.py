"""Asynchronous: predictions per second from submit to result, and submit latency, against a
naive Celery 5 + Redis set-up, in the same run.

Each set-up gets the same load: wrk POSTs one-row jobs for SECONDS over CONNECTIONS keep-alive
connections, then the run waits until every accepted job has its result. Throughput end to end
is accepted jobs / (last result's time - first submit); submit latency is wrk's p99 of the 202.

- pattern, 1 and 2 workers: this folder's compose file through local mode (proxy, Celery
  workers with the solo pool, sink, private redis-server with an append-only file, fsynced
  every second (the compose default) or on every write (`always`).
- naive: what a first Celery set-up looks like. A FastAPI `def` endpoint calling
  `predict.delay(rows)`, GET through `AsyncResult`; one `celery worker` with default settings
  (prefork, one child per core, prefetch 4, Redis result backend, JSON); the same Redis
  persistence as the pattern, the same model.

Target (issue): at least 1,000 predictions/s end to end and submit p99 under 5 ms.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import redis
from celery import Celery
from fastapi import FastAPI

from benchmarks.wrk import Result, answers, post, uvicorn
from shared.localmode import REPO_ROOT, RedisServer, free_port
from shared.model import Predictor
from shared.schemas import PredictRequest
from shared.testing import pattern_running, wait_until

PATTERN = REPO_ROOT / "serving_patterns" / "asynchronous"
SECONDS = 10
# Open-ish loop: each of CONNECTIONS connections waits a random 0..2*DELAY_MS ms before each
# request, so the offered load is about CONNECTIONS / (DELAY_MS + latency) whatever the server,
# and the clients do not fire in lockstep (a fixed delay would send all connections' requests in
# bursts, which no real population of clients does). 12 connections offer about 1,100 jobs/s,
# just over the goal's rate: the submit latency bound is read at the throughput it goes with.
# With 14 (about 1,250/s) two workers still keep up, but the two cores saturate and the submit
# p99 rises to 6-7 ms (README).
CONNECTIONS, DELAY_MS = 12, 10
ROUNDS = 2
BODY = '{"data": [[5.1, 3.5, 1.4, 0.2]]}'
TARGET_RATE, TARGET_P99_MS = 1000.0, 5.0

# --- the naive baseline: Celery as its tutorial shows it ----------------------------------------

_NAIVE_URL = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
naive_celery = Celery("naive", broker=_NAIVE_URL, backend=_NAIVE_URL)
naive_api = FastAPI()


@cache
def _predictor() -> Predictor:
    return Predictor(REPO_ROOT / "models" / "iris")


@naive_celery.task  # type: ignore[untyped-decorator]  # Celery is untyped
def naive_predict(rows: list[list[float]]) -> list[dict[str, Any]]:
    return _predictor().predict(rows)


@naive_api.post("/predict", status_code=202)
def naive_submit(body: PredictRequest) -> dict[str, str]:
    return {"job_id": naive_predict.delay(body.data).id}


@naive_api.get("/jobs/{job_id}")
def naive_job(job_id: str) -> dict[str, Any]:
    result = naive_celery.AsyncResult(job_id)
    return {"status": result.status, "result": result.result if result.ready() else None}


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    accepted: int
    submit_rps: float
    submit_p99_ms: float
    end_to_end_rps: float
    errors: int


def _finish_times_pattern(client: redis.Redis) -> list[float]:
    keys = list(client.scan_iter("job:*", count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "status", "finished_at")
        return [float(f) for status, f in pipe.execute() if status == b"done"]


def _finish_times_naive(client: redis.Redis) -> list[float]:
    import json
    from datetime import datetime

    keys = list(client.scan_iter("celery-task-meta-*", count=1000))
    times = []
    for raw in client.mget(keys) if keys else []:
        assert raw is not None  # scanned just now, and results are kept for a day
        meta = json.loads(raw)
        if meta["status"] == "SUCCESS":
            times.append(datetime.fromisoformat(meta["date_done"]).timestamp())
    return times


def _submit(url: str, seconds: int) -> Result:
    return post(url, BODY, CONNECTIONS, seconds, threads=1, max_pause_ms=2 * DELAY_MS)


def _measure(url: str, client: redis.Redis, finish_times: Any) -> Figures:
    _submit(url, seconds=1)  # warm-up
    wait_until(lambda: _quiet(client), timeout=120, what="the warm-up jobs")
    started = time.time()
    result = _submit(url, SECONDS)
    accepted = round(result.rps * SECONDS)  # wrk's count of answers, all 202 when errors == 0

    def finished() -> list[float] | None:
        times = [t for t in finish_times(client) if t >= started]
        return times if len(times) >= accepted * 0.999 else None

    times = wait_until(
        finished,
        timeout=300,
        interval=0.5,
        what="every accepted job's result",
    )
    return Figures(
        accepted=len(times),
        submit_rps=result.rps,
        submit_p99_ms=result.p99_ms,
        end_to_end_rps=len(times) / (max(times) - started),
        errors=result.errors,
    )


def _quiet(client: redis.Redis) -> bool:
    return client.llen("predictions") == 0 and client.llen("celery") == 0


def _pattern(workers: int, appendfsync: str = "everysec") -> Figures:
    with pattern_running(
        PATTERN,
        ASYNCHRONOUS_WORKER_REPLICAS=str(workers),
        ASYNCHRONOUS_REDIS_APPENDFSYNC=appendfsync,
        ASYNCHRONOUS_SINK_DATABASE_URL=f"sqlite:///{Path(tempfile.gettempdir())}/bench-{os.getpid()}.db",
        ASYNCHRONOUS_PROXY_LOG_LEVEL="WARNING",
        ASYNCHRONOUS_WORKER_LOG_LEVEL="WARNING",
    ) as pattern:
        client = redis.Redis.from_url(pattern.service_url("redis"))
        wait_until(lambda: httpx2.get(f"{pattern.url('proxy')}/ready").status_code == 200)
        return _measure(f"{pattern.url('proxy')}/predict", client, _finish_times_pattern)


def _naive() -> Figures:
    server = RedisServer(["redis-server", "--appendonly", "yes", "--appendfsync", "everysec"], None)
    env = {**os.environ, "NAIVE_REDIS_URL": server.url, "PYTHONPATH": str(REPO_ROOT)}
    port = free_port()
    processes = [
        uvicorn("benchmarks.asynchronous:naive_api", port, env),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.asynchronous:naive_celery",
                "worker",
                "--loglevel",
                "warning",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        url = f"http://127.0.0.1:{port}/predict"
        wait_until(lambda: answers(url, BODY, 202), timeout=60, what="the naive API")
        client = redis.Redis.from_url(server.url)
        return _measure(url, client, _finish_times_naive)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()  # a prefork worker's children go down with their parent
                process.wait()
        server.close()


def main() -> bool:
    setups: dict[str, Callable[[], Figures]] = {
        "naive Celery (prefork x2, result backend)": _naive,
        "pattern, 1 worker (solo)": lambda: _pattern(1),
        "pattern, 2 workers (solo)": lambda: _pattern(2),
        "pattern, 2 workers, appendfsync always": lambda: _pattern(2, "always"),
    }
    runs: dict[str, list[Figures]] = {name: [] for name in setups}
    for _ in range(ROUNDS):
        for name, run in setups.items():
            runs[name].append(run())
    print(f"{'set-up':<44}{'jobs':>8}{'submit/s':>10}{'p99 ms':>8}{'e2e pred/s':>12}{'errors':>8}")
    best = {}
    for name, figures in runs.items():
        e2e = statistics.median(f.end_to_end_rps for f in figures)
        p99 = statistics.median(f.submit_p99_ms for f in figures)
        rps = statistics.median(f.submit_rps for f in figures)
        errors = sum(f.errors for f in figures)
        jobs = sum(f.accepted for f in figures)
        best[name] = (e2e, p99, errors)
        print(f"{name:<44}{jobs:>8}{rps:>10.0f}{p99:>8.2f}{e2e:>12.0f}{errors:>8}")
    e2e, p99, errors = best["pattern, 2 workers (solo)"]
    met = e2e >= TARGET_RATE and p99 < TARGET_P99_MS and errors == 0
    print(
        f"pattern, 2 workers: {e2e:.0f} predictions/s end to end (target >= {TARGET_RATE:.0f}), "
        f"submit p99 {p99:.2f} ms (target < {TARGET_P99_MS:.0f}): {'MET' if met else 'NOT MET'}"
    )
    print(
        f"({ROUNDS} rounds of {SECONDS}s per set-up, median; wrk -t1 -c{CONNECTIONS} with a "
        f"random 0-{2 * DELAY_MS} ms pause per request, about {CONNECTIONS * 1000 // DELAY_MS} "
        "jobs/s offered; one-row jobs; Redis appendfsync everysec unless said)"
    )
    return met
