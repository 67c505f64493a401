"""The job management server of pipeline training: each flow at its own cadence.

    python -m training_patterns.pipeline_training.scheduler
    # PIPELINE_TRAINING_SCHEDULER_REFRESH_SCHEDULE (daily), _TRAINING_SCHEDULE (weekly)

Two of the batch serving pattern's schedulers (serving_patterns/batch/scheduler.py), one a
thread: the data refresh flow on its schedule, the training flow on its own. Each tick starts
the flow as a process with this process's environment and waits for it; a tick that falls while
that flow's run goes on is skipped. The training flow trains on the latest successful refresh,
so a week's training uses the newest data without waiting for it. A failed run exits 1 and the
schedule goes on; `resume` (by hand) finishes it from the failed step.
"""

import signal
import sys
import threading
from types import FrameType

from serving_patterns.batch.scheduler import Scheduler
from serving_patterns.batch.settings import SchedulerSettings as BatchSchedulerSettings
from shared.logs import configure_logging
from training_patterns.pipeline_training.settings import SchedulerSettings

FLOW = [sys.executable, "-m", "training_patterns.pipeline_training.{}", "run"]


def schedulers(settings: SchedulerSettings) -> dict[str, Scheduler]:
    """The refresh and the training, each a scheduler with its cron schedule and flow."""
    return {
        flow: Scheduler(
            BatchSchedulerSettings(
                schedule=schedule,
                heartbeat_file=settings.heartbeat_file,
                log_level=settings.log_level,
            ),
            job=[part.format(flow) for part in FLOW],
        )
        for flow, schedule in (
            ("refresh_flow", settings.refresh_schedule),
            ("training_flow", settings.training_schedule),
        )
    }


def main() -> int:
    settings = SchedulerSettings()
    configure_logging("pipeline-training-scheduler", settings.log_level)
    running = schedulers(settings)
    threads = [
        threading.Thread(target=s.serve, name=flow, daemon=True) for flow, s in running.items()
    ]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for scheduler in running.values():
            scheduler.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
