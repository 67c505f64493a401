"""Settings of the pattern's jobs: the recorded trainer and the reproducer.

ONLY_ME_TRAINER_* configure the training run (the MLflow server, the hyperparameters, the
seed); ONLY_ME_REPRODUCER_* say which registered version to re-run. The notebook reads none:
its choices are literals in its cells, which is part of the antipattern.
"""

from pydantic import Field
from pydantic_settings import BaseSettings

from shared.settings import job_config

REQUIREMENTS = "requirements/trainer.txt"


class TrainerSettings(BaseSettings):
    """The recorded training run."""

    model_config = job_config("ONLY_ME_TRAINER_")

    log_level: str = Field("INFO", description="Python log level")
    tracking_uri: str = Field("http://127.0.0.1:5040", description="The MLflow server")
    experiment: str = Field("only-me", description="MLflow experiment of the runs")
    model_name: str = Field("only-me-iris", description="Registered model of the versions")
    regularization: float = Field(1.0, gt=0, description="Inverse regularization strength C")
    seed: int = Field(42, ge=0, description="Seed of the row order and the solver")
    requirements: str = Field(
        REQUIREMENTS, description="The pinned requirements file of the training environment"
    )
    work_dir: str = Field(".local/only_me/work", description="Scratch directory of the export")
    code_version: str = Field(
        "", description="Git revision; empty: asked of git (an image has no .git)"
    )


class ReproducerSettings(BaseSettings):
    """The re-run of a registered version from what the registry holds."""

    model_config = job_config("ONLY_ME_REPRODUCER_")

    log_level: str = Field("INFO", description="Python log level")
    tracking_uri: str = Field("http://127.0.0.1:5040", description="The MLflow server")
    model_name: str = Field("only-me-iris", description="Registered model to reproduce")
    version: str = Field("", description="Version to reproduce; empty: the latest")
    requirements: str = Field(
        REQUIREMENTS, description="The requirements file this environment was built from"
    )
    work_dir: str = Field(".local/only_me/rerun", description="Scratch directory of the re-run")
