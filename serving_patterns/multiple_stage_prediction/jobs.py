"""The queue between the two stages: the one Celery app the API and the worker both build.

Plain Celery, as most projects use it: a Redis broker, the Redis result backend, a task sent by
name and its state read back by job id. What is set here, and why:

- acks late + reject on worker lost: a heavy job's message is acknowledged only after the job
  ran. A worker that dies mid-job (the node, kill -9) leaves the message unacknowledged in
  Redis, and after the visibility timeout a worker puts it back on the queue; a pool process
  killed mid-job is noticed by its parent, which puts the message back at once.
- track started: a running job reads STARTED in the backend (its pool process's pid too).
- extended results: the backend keeps each job's input and the submit's request id, so the
  heavy answer can be set beside the light one.
- QUEUED: Celery reads an id it has never seen as PENDING, the same as a job still queued. The
  API writes this state of its own before it sends the job, so an unknown id is told apart
  (404) and a queued job never reads as unknown.
- no SUBSCRIBE per job: Celery's Redis result backend subscribes the client to each job's
  channel as it sends the job, for `result.get()` to wait on, and reads the replies only while
  something waits. A client that polls instead never reads them: 161 bytes per job pile up
  unread in its socket (483 kB after 3,000 jobs, measured here), growing with every job
  (celery/celery#6963 reports the memory growth and connection resets that follow).
  PollingRedisBackend leaves that out; everything else is Celery's.
- short timeouts on every Redis call: the API answers with the light model even while Redis is
  away, so a call to the queue must give up within a second, not retry for minutes.
"""

import uuid
from typing import Any

from celery import Celery
from celery.app.task import Context
from celery.backends.redis import RedisBackend

from serving_patterns.multiple_stage_prediction.settings import QueueSettings

TASK_NAME = "multiple_stage_prediction.heavy_predict"
QUEUE = "heavy"
QUEUED = "QUEUED"  # written by the API before the message is sent; not one of Celery's states


class PollingRedisBackend(RedisBackend):  # type: ignore[misc]  # Celery is untyped
    """Celery's Redis result backend, for clients that poll a job's state and never wait on it."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        pass  # no SUBSCRIBE to the job's channel: nobody would read its messages


def create_celery(settings: QueueSettings) -> Celery:
    timeout = settings.redis_timeout_seconds
    app = Celery(
        "multiple_stage_prediction",
        broker=settings.redis_url,
        # "<backend class>+<url>": Celery's way of naming a backend class of one's own.
        backend=f"{__name__}:{PollingRedisBackend.__name__}+{settings.redis_url}",
        set_as_current=False,
    )
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        result_extended=True,
        result_expires=settings.result_expires_seconds,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A heavy job at a time per pool process: the rest wait in Redis for whichever worker
        # is free, not in one worker's prefetch buffer.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        },
        broker_connection_timeout=timeout,
        broker_connection_retry_on_startup=True,
        # One quick retry of a publish, then the API gives up (Celery's default: 3, for longer).
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.1},
        redis_socket_timeout=timeout,
        redis_socket_connect_timeout=timeout,
        # A result-backend write is retried 20 times, a second apart, by default.
        result_backend_transport_options={"retry_policy": {"max_retries": 1}},
        worker_hijack_root_logger=False,
    )
    return app


def mark_queued(app: Celery, job_id: str, rows: list[list[float]], request_id: str) -> None:
    """Record the job as QUEUED, with its input, before its message is sent."""
    request = Context(task=TASK_NAME, args=[rows], kwargs={"request_id": request_id})
    app.backend.store_result(job_id, None, QUEUED, request=request)


def submit(app: Celery, rows: list[list[float]], request_id: str) -> str:
    """Queue a heavy job; its id. Blocking (Celery's client is synchronous): run it in a thread.

    `send_task` is what `task.delay()` and `apply_async()` call: the API holds no task code, so it
    sends by name, with the id it recorded first.
    """
    job_id = uuid.uuid4().hex
    mark_queued(app, job_id, rows, request_id)
    app.send_task(TASK_NAME, args=[rows], kwargs={"request_id": request_id}, task_id=job_id)
    return job_id


def read(app: Celery, job_id: str) -> dict[str, Any]:
    """The job's state as the result backend has it: one Redis GET (blocking, as submit)."""
    meta: dict[str, Any] = app.backend.get_task_meta(job_id)
    return meta
