"""Settings of the pipeline training pattern: the pipeline's steps and the scheduler.

The steps read PIPELINE_TRAINING_PIPELINE_* (PIPELINE_TRAINING_PIPELINE_MIN_ACCURACY), whichever
flow runs them; the scheduler reads PIPELINE_TRAINING_SCHEDULER_* and passes its environment on
to the flows it starts. Metaflow reads its own variables (METAFLOW_*) when it is imported:
`metaflow_environment` gives them this pattern's defaults, a local datastore and no service.
"""

import os

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from shared.settings import job_config
from training_patterns.batch_training.settings import TrainerSettings

STEPS = ["gather", "validate", "preprocess", "train", "evaluate", "register"]
# Metaflow's configuration when the environment gives none: runs and artefacts in a folder (the
# local datastore and metadata), no metadata service, nothing over the network. Metaflow names
# each run's user: from USERNAME (or USER); a container or CI job may have neither.
_USER = os.environ.get("USER", "")
METAFLOW_DEFAULTS = {
    "METAFLOW_DEFAULT_DATASTORE": "local",
    "METAFLOW_DEFAULT_METADATA": "local",
    "METAFLOW_DATASTORE_SYSROOT_LOCAL": ".local/pipeline_training",
    "USERNAME": _USER if _USER not in ("", "root") else "pipeline",  # Metaflow refuses root
}


def metaflow_environment() -> None:
    """Metaflow's variables, where the environment does not set them: before `import metaflow`
    (it reads them once, at import), in the flow files and in every process that reads runs."""
    for name, value in METAFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


class PipelineSettings(TrainerSettings):
    """The steps: where the rows come from, the model, the model repository and the gate, as
    batch training's job has them (its settings, under this pattern's prefix), and the drill."""

    model_config = job_config("PIPELINE_TRAINING_PIPELINE_")

    experiment: str = Field("pipeline-training", description="MLflow experiment of the runs")
    fail_at: str = Field(
        "",
        description="A step that raises when it starts: a drill of the failure and the resume "
        "(empty: none)",
    )

    @field_validator("fail_at")
    @classmethod
    def _known_step(cls, value: str) -> str:
        if value and value not in STEPS:
            raise ValueError(f"fail_at: no step {value!r} (steps: {', '.join(STEPS)})")
        return value


class SchedulerSettings(BaseSettings):
    """The job management server: the data refresh and the training at their own cadences."""

    model_config = job_config("PIPELINE_TRAINING_SCHEDULER_")

    log_level: str = Field("INFO", description="Python log level")
    refresh_schedule: str = Field(
        "0 2 * * *", description="Cron expression of the data refresh (daily at 02:00 UTC)"
    )
    training_schedule: str = Field(
        "0 3 * * 1", description="Cron expression of the training (weekly, Monday 03:00 UTC)"
    )
    heartbeat_file: str = Field(
        "/tmp/pipeline-training-scheduler.heartbeat",
        description="Touched while alive; read by the healthcheck",
    )

    @field_validator("refresh_schedule", "training_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value
