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


def job_config(env_prefix: str, populate_by_name: bool = False) -> SettingsConfigDict:
    """The settings of a job or a process that is not an HTTP service (a batch job, a training
    step, a scheduler): its own env prefix, frozen, other variables ignored, and an empty value
    taken as not set, since compose passes "${VAR:-}" as an empty string."""
    return SettingsConfigDict(
        env_prefix=env_prefix,
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        populate_by_name=populate_by_name,
    )


class UpstreamSettings(ServiceSettings):
    """A service that calls another (a model server): how its calls are bounded
    (shared.http.ServiceClient.configured). The upstream's URL is the service's own field."""

    timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Deadline on the whole call to the upstream (connect, send, wait, read): "
        "then 504",
    )
    max_connections: int = Field(
        100, gt=0, description="Size of the connection pool to the upstream"
    )
    max_in_flight: int = Field(
        200,
        gt=0,
        description="Most calls to the upstream at once, waiting for a connection or holding "
        "one; past it a request gets 503 at once",
    )


class ModelServiceSettings(ServiceSettings):
    """A service that serves a model from a directory holding model.onnx and model.json."""

    model_dir: str = Field("models/iris", description="Directory of the exported model")
    max_rows: int = Field(100, gt=0, description="Most rows one /predict request may carry")
    grpc_address: str | None = Field(
        None,
        description="Where to serve the Open Inference Protocol over gRPC (0.0.0.0:8001, say); "
        "unset: HTTP only",
    )
    max_batch_size: int = Field(
        0,
        ge=0,
        description="Micro-batching: most rows gathered from concurrent requests into one model "
        "call (0 or 1: off, each request calls the model itself)",
    )
    max_batch_wait_ms: float = Field(
        1000.0,
        gt=0,
        description="Micro-batching: the longest a request may wait for its model call; one "
        "that would wait longer gets 503 with Retry-After at once",
    )
    max_batch_queue: int = Field(
        1024, gt=0, description="Micro-batching: most requests waiting; beyond, 503 at once"
    )
