"""The job management server of batch training: starts the trainer on a cron schedule.

    python -m training_patterns.batch_training.scheduler   # BATCH_TRAINING_SCHEDULER_SCHEDULE

The batch serving pattern's scheduler (serving_patterns/batch/scheduler.py) does the work: each
tick starts the job as a process of its own with this process's environment and waits for it;
a tick that falls while a run goes on is skipped. A failed run exits 1 and the schedule goes on:
the next tick is the re-kick.
"""

import signal
import sys
from types import FrameType

from serving_patterns.batch.scheduler import Scheduler
from shared.logs import configure_logging
from training_patterns.batch_training.settings import SchedulerSettings

JOB = [sys.executable, "-m", "training_patterns.batch_training.job"]


def main() -> int:
    settings = SchedulerSettings()
    configure_logging("batch-training-scheduler", settings.log_level)
    scheduler = Scheduler(settings.for_batch_scheduler(), job=JOB)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        scheduler.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
