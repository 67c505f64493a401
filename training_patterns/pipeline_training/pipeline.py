"""The whole pipeline once: the data refresh, then the training on it (compose's one-shot).

    python -m training_patterns.pipeline_training.pipeline

Each flow runs as a process of its own, as the scheduler starts them; the training starts only
when the refresh succeeded. A failed flow stops here with its exit code: `resume` that flow
(refresh_flow or training_flow) to finish it from the failed step.
"""

import logging
import subprocess
import sys

from shared.logs import configure_logging
from training_patterns.pipeline_training.scheduler import FLOW
from training_patterns.pipeline_training.settings import PipelineSettings

logger = logging.getLogger(__name__)


def main() -> int:
    configure_logging("pipeline-training-pipeline", PipelineSettings().log_level)
    for flow in ("refresh_flow", "training_flow"):
        command = [part.format(flow) for part in FLOW]
        logger.info("starting %s", " ".join(command))
        code = subprocess.run(command).returncode
        if code != 0:
            logger.error(
                "%s failed (exit code %d): resume it to go on from its failed step", flow, code
            )
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
