"""The worker: a Celery worker that runs the heavy model on the jobs the API queued.

    python -m serving_patterns.multiple_stage_prediction.worker

Celery's default pool, prefork: the heavy model is the slow, CPU-bound kind, so each job runs
in a pool process of its own while the parent keeps consuming and beating the heartbeat. The
heavy model here is the iris model again (the same problem as the light one, and the only model
shared/training.py has for it) made slow and unreliable by two settings, DELAY_SECONDS and
FAILURE_RATE, so that the pattern's two claims can be seen and tested: the light answer does not
wait for it, and its failure does not touch the light answer.

A job that fails is recorded as FAILURE with its reason and not retried: the light answer is
already with the client, and a retry would only make the better answer later still.
"""

import logging
import os
import random
import socket
import time
from typing import Any

from celery import Celery, bootsteps, signals

from serving_patterns.multiple_stage_prediction.jobs import QUEUE, TASK_NAME, create_celery
from serving_patterns.multiple_stage_prediction.settings import WorkerSettings
from shared.heartbeat import Heartbeat
from shared.logs import configure_logging, request_id_var
from shared.model import Predictor

logger = logging.getLogger(__name__)

ENV_PREFIX = "MULTIPLE_STAGE_PREDICTION_WORKER_"  # WorkerSettings' prefix: the healthcheck's


class HeavyModelError(RuntimeError):
    """The heavy model could not answer (here: the injected failure)."""


class HeavyModel:
    """The heavy stage's model, loaded in each pool process (an onnxruntime session is not to
    be shared across a fork)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.predictor: Predictor | None = None

    def load(self) -> None:
        self.predictor = Predictor(self.settings.model_dir)

    def predict(self, rows: list[list[float]]) -> dict[str, Any]:
        if self.predictor is None:
            self.load()
        assert self.predictor is not None
        if self.settings.delay_seconds:
            time.sleep(self.settings.delay_seconds)  # stands in for a heavy model
        if random.random() < self.settings.failure_rate:
            raise HeavyModelError(
                f"injected failure ({ENV_PREFIX}FAILURE_RATE={self.settings.failure_rate:g})"
            )
        return {
            "predictions": self.predictor.predict(rows),
            "model_version": self.predictor.card.version,
        }


def heartbeat_step(seconds: float) -> type[Any]:
    """A consumer bootstep that beats every `seconds` from Celery's event loop, after a PING
    through the consumer's own broker channel.

    Started once the consumer consumes, stopped when it loses Redis (Celery restarts it after
    reconnecting): no beats while the loop is stuck or cannot reach the queue. A PING that fails
    raises into the loop, and Celery reconnects.
    """
    beats = Heartbeat(ENV_PREFIX, seconds)

    class HeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)
        name = "multiple_stage_prediction.heartbeat"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.timer: Any = None

        def start(self, c: Any) -> None:
            channel = c.task_consumer.channel

            def beat() -> None:
                with channel.conn_or_acquire() as client:
                    client.ping()
                beats.beat()

            beat()
            self.timer = c.timer.call_repeatedly(seconds, beat)

        def stop(self, c: Any) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        shutdown = stop

    return HeartbeatStep


def create_worker(settings: WorkerSettings, model: HeavyModel | None = None) -> Celery:
    """The Celery app with the heavy task registered on it."""
    model = model or HeavyModel(settings)
    app = create_celery(settings)
    app.conf.broker_transport_options.update(
        # How long a message may stay unacknowledged before it counts as its worker's loss.
        visibility_timeout=settings.visibility_timeout_seconds,
        # Look for the messages of dead workers this often (kombu's default: every 10 s, and
        # only one look in ten is done: the throttle).
        unacked_restore_interval=settings.restore_interval_seconds,
        unacked_restore_throttle=1,
    )
    app.steps["consumer"].add(heartbeat_step(settings.heartbeat_seconds))

    # shared=False: the task belongs to this app alone. Celery is untyped: so is its decorator.
    @app.task(name=TASK_NAME, shared=False)  # type: ignore[untyped-decorator]
    def heavy_predict(rows: list[list[float]], request_id: str) -> dict[str, Any]:
        started = time.perf_counter()
        answer = model.predict(rows)
        logger.info(
            "heavy prediction in %.3fs: %s",
            time.perf_counter() - started,
            [p["label"] for p in answer["predictions"]],
        )
        return answer

    # The submit's request id in every log line of the job, Celery's own (its failure) included.
    @signals.task_prerun.connect(sender=heavy_predict, weak=False)  # type: ignore[untyped-decorator]
    def carry_request_id(task: Any, kwargs: dict[str, Any], **_: Any) -> None:
        task.request.request_id_token = request_id_var.set(kwargs.get("request_id", "-"))

    @signals.task_postrun.connect(sender=heavy_predict, weak=False)  # type: ignore[untyped-decorator]
    def drop_request_id(task: Any, **_: Any) -> None:
        token = getattr(task.request, "request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    # Each pool process loads its own model before its first job.
    @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def load_model(**_: Any) -> None:
        model.load()

    return app


def main() -> None:
    settings = WorkerSettings()
    model = HeavyModel(settings)
    app = create_worker(settings, model)

    @signals.setup_logging.connect(weak=False)  # type: ignore[untyped-decorator]
    def json_logs(**_: Any) -> None:
        configure_logging("multiple-stage-prediction-worker", settings.log_level)

    # Before consuming: a model that cannot load stops the worker here, before it takes a job
    # (in worker_process_init Celery would only log the error, and the pool would keep
    # restarting its processes).
    json_logs()
    try:
        model.load()
    except Exception:
        logger.exception("cannot load the heavy model from %s: not consuming", settings.model_dir)
        raise SystemExit(1) from None
    model.predictor = None  # each pool process loads its own

    app.worker_main(
        [
            "--quiet",  # no banner: every line on stdout is a JSON log record
            "worker",
            "--pool=prefork",
            f"--concurrency={settings.concurrency}",
            f"--hostname=worker@{os.environ.get('HOSTNAME') or socket.gethostname()}",
            f"--queues={QUEUE}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
