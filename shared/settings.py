"""The settings every service shares; each service subclasses it with its own env prefix."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = Field("INFO", description="Python log level of the service")
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Larger request bodies are refused with 413"
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request body not received whole within this time is refused with 408",
    )
    leak_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a connection pool may hold connections no call holds before "
        "/health fails (a leak: the service must be restarted)",
    )


class ModelServiceSettings(ServiceSettings):
    """A service that serves a model from a directory holding model.onnx and model.json."""

    model_dir: str = Field("models/iris", description="Directory of the exported model")
    max_rows: int = Field(100, gt=0, description="Most rows one /predict request may carry")
