"""The job management server of the batch pattern: starts the job on a cron schedule.

    python -m serving_patterns.batch.scheduler      # BATCH_SCHEDULER_SCHEDULE="*/5 * * * *" (UTC)

Each tick starts the job as a process of its own (`python -m serving_patterns.batch.job`, with
this process's environment) and waits for it to exit: the model is loaded only while a run goes.
A tick that falls while its run is still going is skipped, as a Kubernetes CronJob with
concurrencyPolicy Forbid does; a job started by hand meanwhile joins the open run (PostgreSQL)
or exits (SQLite: one job process at a time).
While alive the scheduler touches BATCH_SCHEDULER_HEARTBEAT_FILE, which its healthcheck reads.
"""

import logging
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from croniter import croniter

from serving_patterns.batch.settings import SchedulerSettings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)

JOB = [sys.executable, "-m", "serving_patterns.batch.job"]
BEAT_SECONDS = 5.0


def next_tick(schedule: str, after: datetime) -> datetime:
    """The first time the cron expression fires strictly after `after`."""
    tick: datetime = croniter(schedule, after).get_next(datetime)
    return tick


class Scheduler:
    def __init__(self, settings: SchedulerSettings, job: list[str] = JOB) -> None:
        self.settings = settings
        self.job = job
        self.heartbeat = Path(settings.heartbeat_file)
        self.stop = threading.Event()

    def beat(self) -> None:
        self.heartbeat.touch()

    def serve(self) -> None:
        """Run the job at every tick until stop is set."""
        while not self.stop.is_set():
            # From now, not from the last tick: ticks missed while a run went on are skipped.
            due = next_tick(self.settings.schedule, datetime.now(UTC))
            logger.info("next run at %s", due.isoformat())
            while not self.stop.is_set():
                self.beat()
                left = (due - datetime.now(UTC)).total_seconds()
                if left <= 0:
                    self.run_job()
                    break
                self.stop.wait(min(left, BEAT_SECONDS))

    def run_job(self) -> int:
        started = time.monotonic()
        logger.info("starting the job: %s", " ".join(self.job))
        process = subprocess.Popen(self.job)
        while True:
            self.beat()
            try:
                code = process.wait(timeout=BEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if self.stop.is_set():
                    process.terminate()  # the job finishes its chunk and records the rest
        seconds = time.monotonic() - started
        log = logger.info if code == 0 else logger.warning
        log("job exited with code %d after %.1f s", code, seconds)
        return code


def main() -> int:
    settings = SchedulerSettings()
    configure_logging("batch-scheduler", settings.log_level)
    scheduler = Scheduler(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("schedule %r (UTC)", settings.schedule)
    scheduler.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
