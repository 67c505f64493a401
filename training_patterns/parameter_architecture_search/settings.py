"""Settings of the parameter and architecture search: the search workers and the one-shot that
registers the best trial's model.

What both read alike (the study's storage and name, the seed, the MLflow server) is named
PARAMETER_ARCHITECTURE_SEARCH_<SETTING>; each service's own under
PARAMETER_ARCHITECTURE_SEARCH_<SERVICE>_ (PARAMETER_ARCHITECTURE_SEARCH_WORKER_N_TRIALS). The
MLflow server is configured on its command line in compose.yaml.
"""

from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

from shared.settings import job_config

PREFIX = "PARAMETER_ARCHITECTURE_SEARCH_"


def _common(name: str, *fallbacks: str) -> AliasChoices:
    """A setting every service reads alike: named outside the service's prefix."""
    return AliasChoices(f"{PREFIX}{name.upper()}", *fallbacks, name)


Storage = Annotated[
    str,
    Field(
        "sqlite:///.local/parameter_architecture_search/optuna.db",
        validation_alias=_common("storage", "DATABASE_URL"),
        description="Optuna's relational storage, shared by every worker: a SQLAlchemy URL "
        "(postgresql://user@host/db for several processes, sqlite:///file.db for one)",
    ),
]
StorageSchema = Annotated[
    str,
    Field(
        "optuna",
        pattern=r"^[a-z_][a-z0-9_]*$",
        validation_alias=_common("storage_schema"),
        description="PostgreSQL schema of Optuna's tables (MLflow's are in the same database)",
    ),
]
Study = Annotated[
    str,
    Field("iris-search", validation_alias=_common("study"), description="The study workers share"),
]
Seed = Annotated[
    int,
    Field(
        42,
        validation_alias=_common("seed"),
        description="Seeds the sampler and every model: the same seed, the same trials",
    ),
]
TrackingUri = Annotated[
    str,
    Field(
        "http://127.0.0.1:5000",
        validation_alias=_common("tracking_uri"),
        description="The MLflow server: every trial is a run, the best model a version",
    ),
]
Experiment = Annotated[
    str,
    Field(
        "parameter-architecture-search",
        validation_alias=_common("experiment"),
        description="MLflow experiment of the trials' runs",
    ),
]
LogLevel = Annotated[
    str, Field("INFO", validation_alias=_common("log_level"), description="Python log level")
]


class WorkerSettings(BaseSettings):
    """A search worker: joins the study and runs trials until the budget is spent."""

    model_config = job_config(f"{PREFIX}WORKER_", populate_by_name=True)

    storage: Storage
    storage_schema: StorageSchema
    study: Study
    seed: Seed
    tracking_uri: TrackingUri
    experiment: Experiment
    log_level: LogLevel

    n_trials: int = Field(
        20, gt=0, description="The budget: trials of the study in all, whatever the workers"
    )
    timeout_seconds: float = Field(
        600.0, gt=0, description="The time budget of each worker: no trial starts after it"
    )
    cv_folds: int = Field(
        3, ge=2, le=10, description="Folds of the cross-validation that scores a trial"
    )
    startup_trials: int = Field(
        5, ge=1, description="Random trials before TPE models the space; also the pruner's"
    )


# The study's fields, repeated in each class (a base class would need a prefix of its own).
COMMON_FIELDS = ("storage", "storage_schema", "study", "seed", "tracking_uri", "experiment")


class RegisterSettings(BaseSettings):
    """The one-shot after the workers: the best trial's model, registered with its evaluation,
    and Optuna's charts of the study."""

    model_config = job_config(f"{PREFIX}REGISTER_", populate_by_name=True)

    storage: Storage
    storage_schema: StorageSchema
    study: Study
    seed: Seed
    tracking_uri: TrackingUri
    experiment: Experiment
    log_level: LogLevel

    model_name: str = Field("iris-search", description="Registered model of the best trials")
    alias: str = Field("best", description="Alias moved to the version just registered")
    out_dir: str = Field(
        ".local/parameter_architecture_search/study",
        description="Where the charts (PNG) and the exported model are written",
    )
    code_version: str = Field(
        "", description="Git revision of the code; empty: asked of git (an image has no .git)"
    )
