"""Settings of the pattern's services, and of the antipattern's server for contrast.

TRAINING_CODE_IN_SERVING_TRAINER_* configure the training job: where its rows come from (the
internal data warehouse, credentials included) and how hard it tunes. TRAINING_CODE_IN_SERVING_
SERVER_* configure the server: its model directory and the contract's bounds, nothing more.
BadServerSettings is the antipattern: the server configured with the trainer's settings and
variables, so the serving process holds the warehouse's URL and password it never uses.
"""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from shared.settings import ModelServiceSettings, job_config

MODEL_DIR = ".local/training_code_in_serving/model"
# A stand-in for an internal warehouse: the host does not resolve outside a company network, and
# the bundled iris rows stand in for its table (see train.py).
WAREHOUSE_URL = "postgresql://analyst:analyst-password@dwh.internal:5432/warehouse"


class TrainerSettings(BaseSettings):
    """The training job: read, tune, fit, export."""

    model_config = job_config("TRAINING_CODE_IN_SERVING_TRAINER_")

    log_level: str = Field("INFO", description="Python log level")
    warehouse_url: SecretStr = Field(
        SecretStr(WAREHOUSE_URL),
        description="The internal data warehouse the training rows come from (credentials "
        "included); training only",
    )
    trials: int = Field(8, gt=0, le=200, description="Optuna trials of the tuning")
    out_dir: str = Field(MODEL_DIR, description="Where the exported model is written")


class ServerSettings(ModelServiceSettings):
    """The model server: only what serving needs."""

    model_config = job_config("TRAINING_CODE_IN_SERVING_SERVER_")

    model_dir: str = Field(MODEL_DIR, description="Directory of the exported model")


class BadServerSettings(ServerSettings):
    """The antipattern's server settings: the trainer's, grown a model directory. It reads the
    trainer's variables (TRAINING_CODE_IN_SERVING_TRAINER_*), the warehouse's URL included."""

    model_config = job_config("TRAINING_CODE_IN_SERVING_TRAINER_")

    warehouse_url: SecretStr = Field(
        SecretStr(WAREHOUSE_URL), description="Copied from training: unused, but held"
    )
    trials: int = Field(8, gt=0, description="Copied from training: unused")
