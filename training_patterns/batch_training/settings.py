"""Settings of the batch training pattern's services: the trainer job, its scheduler, and the
fetch and predictor that serve the champion.

Each reads its own under BATCH_TRAINING_<SERVICE>_ (BATCH_TRAINING_TRAINER_MIN_ACCURACY,
BATCH_TRAINING_SCHEDULER_SCHEDULE); the scheduler passes its environment on to the jobs it
starts. The MLflow server is configured on its command line in compose.yaml. The serving image
imports this module too: the scheduler's libraries are imported where they are used.
"""

from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ModelServiceSettings, job_config

if TYPE_CHECKING:
    from serving_patterns.batch.settings import SchedulerSettings as BatchSchedulerSettings

CHAMPION_DIR = ".local/batch_training/champion"


class TrainerSettings(BaseSettings):
    """The training job: gather, validate, preprocess, train, evaluate, export, record."""

    model_config = job_config("BATCH_TRAINING_TRAINER_")

    log_level: str = Field("INFO", description="Python log level")
    tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        description="The MLflow server (model repository and evaluation records)",
    )
    experiment: str = Field("batch-training", description="MLflow experiment of the runs")
    model_name: str = Field("iris", description="Registered model the job adds versions to")
    serving_alias: str = Field(
        "champion", description="Alias the gate moves to a version good enough to serve"
    )
    min_accuracy: float = Field(
        0.9, ge=0, le=1, description="The gate: test accuracy a version needs for the alias"
    )
    source: str = Field(
        "",
        description="CSV file of training rows (the iris columns); empty: the bundled iris "
        "data set with a bad row every BAD_EVERY rows",
    )
    bad_every: int = Field(15, ge=0, description="Bundled data: every Nth row is corrupted")
    min_valid_fraction: float = Field(
        0.5, ge=0, le=1, description="Fewer valid rows than this fraction fail the validation"
    )
    regularization: float = Field(
        1.0, gt=0, description="Inverse regularization strength C of the logistic regression"
    )
    max_iter: int = Field(1000, gt=0, description="Solver iterations at most")
    work_dir: str = Field(
        ".local/batch_training/work", description="Scratch directory of the exported model"
    )
    code_version: str = Field(
        "",
        description="Git revision of the code; empty: asked of git (an image has no .git: "
        "pass it at run time)",
    )


class SchedulerSettings(BaseSettings):
    """The job management server: starts the trainer on a cron schedule."""

    model_config = job_config("BATCH_TRAINING_SCHEDULER_")

    log_level: str = Field("INFO", description="Python log level")
    schedule: str = Field(
        "0 3 * * *", description="Cron expression (5 fields; a 6th gives seconds), in UTC"
    )
    heartbeat_file: str = Field(
        "/tmp/batch-training-scheduler.heartbeat",
        description="Touched while alive; read by the healthcheck",
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    def for_batch_scheduler(self) -> "BatchSchedulerSettings":
        """The same settings in the form the batch serving pattern's Scheduler takes."""
        from serving_patterns.batch.settings import SchedulerSettings as BatchSchedulerSettings

        return BatchSchedulerSettings(
            schedule=self.schedule, heartbeat_file=self.heartbeat_file, log_level=self.log_level
        )


class FetchSettings(BaseSettings):
    """The one-shot that downloads the serving alias's model for the predictor."""

    model_config = job_config("BATCH_TRAINING_FETCH_")

    log_level: str = Field("INFO", description="Python log level")
    tracking_uri: str = Field("http://127.0.0.1:5000", description="The MLflow server")
    model_name: str = Field("iris", description="Registered model to serve")
    alias: str = Field("champion", description="The alias whose version is served")
    out_dir: str = Field(CHAMPION_DIR, description="Where the model directory is written")
    timeout: float = Field(30.0, gt=0, description="Seconds each request to MLflow may take")


class PredictorSettings(ModelServiceSettings):
    """The model server of the champion (the contract's /predict, /v2, /metadata)."""

    model_config = SettingsConfigDict(
        env_prefix="BATCH_TRAINING_PREDICTOR_", extra="ignore", frozen=True
    )

    model_dir: str = Field(CHAMPION_DIR, description="Directory of the model fetch wrote")
