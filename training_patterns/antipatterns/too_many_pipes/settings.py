"""Settings of the pattern's one job, the DAG pipeline: TOO_MANY_PIPES_* (a pattern of one
service drops the service's name). The tangled scripts read none: their paths are literals,
which is part of the antipattern."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseSettings):
    """The pipeline run: which back end the data-access layer uses, and the model's settings."""

    # compose passes "${VAR:-}" as an empty string: that means "not set".
    model_config = SettingsConfigDict(
        env_prefix="TOO_MANY_PIPES_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    log_level: str = Field("INFO", description="Python log level")
    backend: Literal["memory", "csv", "sqlite"] = Field(
        "sqlite", description="Back end of the data-access layer"
    )
    store_dir: str = Field(
        ".local/too_many_pipes", description="Where the csv folder or the SQLite file lives"
    )
    regularization: float = Field(1.0, gt=0, description="Inverse regularization strength C")
    test_every: int = Field(5, ge=2, description="Every n-th row is held out for evaluation")
