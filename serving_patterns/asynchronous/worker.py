"""The worker: a Celery worker that takes jobs from the Redis queue, predicts, records the result.

    python -m serving_patterns.asynchronous.worker

How no job is lost and none retries forever:
- acks late: a job's message is acknowledged after the job is recorded, not when it is taken.
  A worker that dies (kill -9) leaves its messages unacknowledged in Redis; once they are older
  than the visibility timeout, another worker puts them back on the queue and runs them.
  (With the prefork pool, a dead child is noticed at once: reject_on_worker_lost requeues.)
- attempts are counted in the job record before each run (jobs.START), so a job that fails,
  or that kills its worker, ends as failed and dead-lettered after max_attempts, never looping.
- the first worker to finish a job records it (jobs.FINISH); a second delivery changes nothing.
- a message kombu lost between taking it and recording it as unacknowledged (Redis stopped, or
  the worker was killed, in that instant) is queued again by jobs.sweep, which a consumer
  bootstep runs every sweep_seconds.

How a Redis outage is ridden out (Redis is both the queue and the job store):
- a job never goes back to the broker while Redis is down. Its record writes wait for Redis (up
  to redis_outage_seconds) instead of raising Reject: kombu cannot reject, nor ack, a message
  while Redis is down, and a failed reject or ack keeps the message's prefetch credit forever,
  so the consumer never asks for another message (nor notices the outage). Past the wait, the
  worker exits non-zero for the restart policy; the job returns after the visibility timeout.
- the heartbeat (shared.heartbeat) is beaten by a consumer bootstep from Celery's event loop,
  after a PING through the consumer's broker channel: a PING that fails raises into the loop,
  and Celery reconnects at once, and a consumer that holds credit no task owns (an ack that
  failed all the same) is made to reconnect too. No beat while the loop is stuck, reconnecting
  or not consuming, so the healthcheck fails then.
"""

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, bootsteps, signals
from celery.exceptions import Reject, Retry
from celery.worker import state
from kombu.utils.functional import retry_over_time
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError
from redis.retry import Retry as RedisRetry

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.settings import WorkerSettings
from shared.heartbeat import Heartbeat
from shared.logs import configure_logging, request_id_var
from shared.model import Predictor

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One delivery of a job, as the task message carries it."""

    id: str
    rows: list[list[float]]
    request_id: str
    worker: str
    submitted_at: float = 0.0

    @property
    def key(self) -> str:
        return jobs.job_key(self.id)


class Runtime:
    """What a worker process holds: the model, a Redis client and the job scripts.

    Made again after a fork (prefork pool): an onnxruntime session and open sockets must not be
    shared between processes.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._pid: int | None = None

    def load(self) -> None:
        if self._pid == os.getpid():
            return
        self.predictor = Predictor(self.settings.model_dir)
        # Quick retries for a blip; an outage is waited out in _patiently.
        self.redis = Redis.from_url(
            self.settings.redis_url, retry=RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), 2)
        )
        self.start_script = self.redis.register_script(jobs.START)
        self.finish_script = self.redis.register_script(jobs.FINISH)
        self._pid = os.getpid()
        card = self.predictor.card
        logger.info("model %s %s loaded", card.name, card.version)

    def run(self, task: Task, job: Job) -> None:
        try:
            self.load()
        except Exception as exc:
            # Not started, so not counted: back on the queue for a worker that can run it
            # (acknowledged as failed, the message would be gone and the job pending forever).
            logger.exception("job %s: cannot load the model, requeued", job.id)
            raise Reject(str(exc), requeue=True) from exc
        try:
            attempt, *submitted_at = self._patiently(
                job,
                "record the start",
                lambda: self.start_script(keys=[job.key], args=[job.worker, time.time()]),
            )
        except RedisError as exc:
            # Redis answers, with an error (out of memory...): unrecorded, so not run; back on
            # the queue.
            logger.warning("job %s: cannot record the start, requeued: %s", job.id, exc)
            raise Reject(str(exc), requeue=True) from exc
        if attempt < 0:
            logger.info("job %s already finished (or expired): this delivery is dropped", job.id)
            return
        job.submitted_at = float(submitted_at[0])
        try:
            self._attempt(task, job, attempt)
        except (Reject, Retry):
            raise
        except Exception as exc:
            # A bug of this code, not of the model: the client sees the job failed, with the
            # reason, rather than pending until its record expires.
            logger.exception("job %s: unexpected error", job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {exc}", attempt)

    def _attempt(self, task: Task, job: Job, attempt: int) -> None:
        settings = self.settings
        if attempt > settings.max_attempts:
            # Only a run that never finished (its worker died) gets here: START counted it.
            reason = f"gave up after {settings.max_attempts} attempts: the worker was lost"
            self._fail(job, reason, attempt - 1)
            return
        try:
            predictions = self.predict(job.rows)
        except Exception as exc:  # whatever the model raises: retried, then dead-lettered
            reason = f"{type(exc).__name__}: {exc}"
            if attempt >= settings.max_attempts:
                self._fail(job, reason, attempt)
                return
            countdown = settings.retry_backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "job %s attempt %d of %d failed, retrying in %.2fs: %s",
                job.id,
                attempt,
                settings.max_attempts,
                countdown,
                reason,
            )
            raise task.retry(countdown=countdown, exc=exc) from exc
        self._done(job, predictions)

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        if self.settings.model_delay_seconds:
            time.sleep(self.settings.model_delay_seconds)  # stands in for a slow model
        card = self.predictor.card
        for i, row in enumerate(rows):
            # The proxy checks this too; the queue may have other producers.
            if len(row) != len(card.feature_names):
                raise ValueError(f"row {i}: expected {len(card.feature_names)} features")
        # A finite value can still overflow inside the model (3e38 in every column): Predictor
        # raises UnscorableRows. A poison input the proxy cannot see without the model, and the
        # reason retries need a cap.
        return self.predictor.predict(rows)

    def _done(self, job: Job, predictions: list[dict[str, Any]]) -> None:
        now, version = time.time(), self.predictor.card.version
        # What the sink writes to the inference table.
        record = {
            "job_id": job.id,
            "request_id": job.request_id,
            "predictions": predictions,
            "model_version": version,
            "worker": job.worker,
            "submitted_at": job.submitted_at,
            "finished_at": now,
        }
        fields = [
            "status",
            "done",
            "finished_at",
            now,
            "predictions",
            jobs.dumps(predictions),
            "model_version",
            version,
        ]
        # Without a sink nobody would read the results list: it would only grow.
        target = jobs.RESULTS if self.settings.results_to_sink else None
        self._finish(job, target, record, 0, fields)

    def _fail(self, job: Job, reason: str, attempts: int) -> None:
        logger.error("job %s failed after %d attempts: %s", job.id, attempts, reason)
        now = time.time()
        record = {
            "job_id": job.id,
            "request_id": job.request_id,
            "rows": job.rows,
            "error": reason,
            "attempts": attempts,
            "failed_at": now,
        }
        fields = ["status", "failed", "finished_at", now, "error", reason, "attempts", attempts]
        self._finish(job, jobs.DEAD_LETTERS, record, self.settings.dead_letter_limit, fields)

    def _finish(
        self, job: Job, target: str | None, record: dict[str, Any], keep: int, fields: list[Any]
    ) -> None:
        keys = [job.key, jobs.PENDING] if target is None else [job.key, jobs.PENDING, target]
        args = [job.id, jobs.dumps(record), keep, *fields]
        try:
            finished = self._patiently(
                job, "record the outcome", lambda: self.finish_script(keys=keys, args=args)
            )
        except RedisError as exc:
            logger.warning("job %s: cannot record the outcome, requeued: %s", job.id, exc)
            raise Reject(str(exc), requeue=True) from exc
        if not finished:
            logger.info("job %s was finished by another delivery: this outcome is dropped", job.id)

    def _patiently(self, job: Job, what: str, call: Callable[[], Any]) -> Any:
        """call(), waiting for Redis while it does not answer, up to redis_outage_seconds."""

        def waiting(exc: Exception, intervals: Iterator[float], retries: int) -> float:
            if retries == 0:
                logger.warning("job %s: cannot %s, waiting for Redis: %s", job.id, what, exc)
            return next(intervals)

        try:
            # kombu ships py.typed but leaves retry_over_time unannotated.
            return retry_over_time(  # type: ignore[no-untyped-call]
                call,
                (ConnectionError, TimeoutError),
                errback=waiting,
                interval_start=0.1,
                interval_step=0.2,
                interval_max=1.0,
                timeout=self.settings.redis_outage_seconds,
            )
        except (ConnectionError, TimeoutError):
            # Neither recorded nor given back (a reject needs Redis too): only a new process
            # can consume cleanly. The restart policy starts one; the message is restored after
            # the visibility timeout, like a killed worker's.
            logger.critical(
                "job %s: Redis away for more than %gs, exiting",
                job.id,
                self.settings.redis_outage_seconds,
            )
            logging.shutdown()
            os._exit(EXIT_REDIS_AWAY)


EXIT_REDIS_AWAY = 3
ENV_PREFIX = "ASYNCHRONOUS_WORKER_"  # WorkerSettings' prefix: the healthcheck's argument


Routine = Callable[[Any], Callable[[], None]]


def consumer_routine(seconds: float, routine: Routine, at_start: bool = False) -> type[Any]:
    """A consumer bootstep that runs routine(consumer)() every `seconds` on Celery's event loop.

    Started once the consumer consumes (after the Tasks step), stopped when it loses its
    connection (the blueprint restarts it then), so it never runs while Celery reconnects. An
    error it raises propagates (the hub's propagate_errors) and Celery restarts the consumer.
    """

    class ConsumerRoutine(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)
        name = f"asynchronous.{routine.__name__}"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.timer: Any = None

        def start(self, c: Any) -> None:
            run = routine(c)
            if at_start:
                run()
            self.timer = c.timer.call_repeatedly(seconds, run)

        def stop(self, c: Any) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        shutdown = stop

    return ConsumerRoutine


def heartbeat(settings: WorkerSettings) -> type[Any]:
    """Beats the worker's heartbeat while its consumer consumes.

    Each beat first PINGs Redis through the consumer's channel: a PING that fails raises into
    the event loop, and Celery reconnects at once.
    """
    beats = Heartbeat(ENV_PREFIX, settings.heartbeat_seconds)

    def beat_from(c: Any) -> Callable[[], None]:
        channel = c.task_consumer.channel
        stalled = [0]

        def beat() -> None:
            # A pooled connection, the kind acks use (channel.client's is busy with BRPOP).
            with channel.conn_or_acquire() as client:
                client.ping()
            if channel.qos.can_consume() or state.reserved_requests:
                stalled[0] = 0
                beats.beat()
                return
            # All credit held, yet no task holds a message: an ack or reject failed (Redis
            # went away in between). Twice in a row, so not the instant between a task's
            # end and its ack (threads pool). A new connection brings fresh credit.
            stalled[0] += 1
            if stalled[0] >= 2:
                raise ConnectionError("prefetch credit held by no task: reconnecting")

        return beat

    return consumer_routine(beats.seconds, beat_from, at_start=True)


def lost_message_sweeper(settings: WorkerSettings) -> type[Any]:
    """Runs jobs.sweep every sweep_seconds.

    Each worker tries; a lock lets one of them sweep per interval (a sweep that finds a job
    missing reads every queued message). Correct without it too: a job's message is queued
    again by an atomic script, once, however many sweeps found it missing.
    """
    lock_ms = int(settings.sweep_seconds * 1000)

    def sweep_from(c: Any) -> Callable[[], None]:
        channel = c.task_consumer.channel

        def sweep() -> None:
            try:
                with channel.conn_or_acquire() as client:
                    if not client.set(jobs.SWEEPING, c.hostname, nx=True, px=lock_ms):
                        return  # another worker sweeps this time
                    queued, missing = jobs.sweep(
                        client, settings.queue, settings.lost_after_seconds
                    )
            except RedisError as exc:  # the heartbeat's PING reconnects; try next time
                logger.warning("cannot look for lost jobs: %s", exc)
                return
            if queued:
                logger.warning("queued %d jobs again: their message was lost", queued)
            elif missing:
                logger.info("%d jobs' message missing: queued again if still so", missing)

        return sweep

    return consumer_routine(settings.sweep_seconds, sweep_from)


def create_celery(settings: WorkerSettings, runtime: Runtime | None = None) -> Celery:
    runtime = runtime or Runtime(settings)
    app = Celery("asynchronous", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Look for messages of dead workers this often (kombu's default: every 100 s).
            "unacked_restore_interval": settings.restore_interval_seconds,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # The job record in Redis is the result store: no Celery result backend round trips.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Nobody listens for task events or remote control here; each costs Redis traffic.
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
    )
    app.steps["consumer"].add(heartbeat(settings))
    app.steps["consumer"].add(lost_message_sweeper(settings))

    # shared=False: the task belongs to this app alone (Celery's default also registers it with
    # every app made later, where a second app's task would call the first one's runtime).
    # Celery is untyped: its decorator makes the task untyped too.
    @app.task(  # type: ignore[untyped-decorator]
        bind=True, name=jobs.TASK_NAME, max_retries=None, shared=False
    )
    def predict(self: Task, job_id: str, rows: list[list[float]], request_id: str) -> None:
        runtime.run(self, Job(job_id, rows, request_id, worker=self.request.hostname))

    return app


def main() -> None:
    settings = WorkerSettings()
    runtime = Runtime(settings)
    app = create_celery(settings, runtime)
    name = f"worker@{os.environ.get('HOSTNAME') or socket.gethostname()}"

    # Celery is untyped: its signals' decorators make the handlers untyped too.
    @signals.setup_logging.connect(weak=False)  # type: ignore[untyped-decorator]
    def json_logs(**_: Any) -> None:
        configure_logging("asynchronous-worker", settings.log_level)
        logging.captureWarnings(True)
        # A line per task received and per task done is more work than the prediction itself:
        # shown at DEBUG only; failures and retries still log as warnings.
        quiet = logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING
        for chatty in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(chatty).setLevel(quiet)

    @signals.task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def carry_request_id(task: Task, kwargs: dict[str, Any], **_: Any) -> None:
        task.request.request_id_token = request_id_var.set(kwargs.get("request_id", "-"))

    @signals.task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
    def drop_request_id(task: Task, **_: Any) -> None:
        token = getattr(task.request, "request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    # Before consuming: a model that cannot load stops the worker here, before it takes a job.
    # (In a signal handler Celery would log the error and consume all the same.) JSON logs first,
    # so that the load, or its failure, is logged like everything else; Celery sets them again.
    json_logs()
    try:
        runtime.load()
    except Exception:
        logger.exception("cannot load the model from %s: not consuming", settings.model_dir)
        raise SystemExit(1) from None

    app.worker_main(
        [
            "--quiet",  # no banner: every line on stdout is a JSON log record
            "worker",
            f"--pool={settings.pool}",
            f"--concurrency={settings.concurrency}",
            f"--hostname={name}",
            f"--queues={settings.queue}",
            f"--loglevel={settings.log_level}",
            # Gossip, mingle and event heartbeats are for monitoring and remote control; none is
            # needed to notice a lost worker (that is the visibility timeout's job).
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main()
