"""Settings of the multiple stage prediction pattern, one class per service: the API, the worker."""

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings

REDIS_URL = "redis://127.0.0.1:6379/0"


class QueueSettings(BaseModel):
    """The fields both sides of the queue have: Redis (broker and result backend) and how long
    to wait for it. Not a settings class of its own: each service's reads them with its prefix."""

    redis_url: str = Field(
        REDIS_URL, description="Redis: Celery's broker (the queue) and its result backend"
    )
    redis_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Longest wait for Redis to connect or answer, per call to the queue",
    )
    # Both sides write a job's record (the API when it queues it, the worker as it runs), so both
    # read one variable, outside the services' prefixes.
    result_expires_seconds: int = Field(
        86_400,
        gt=0,
        validation_alias=AliasChoices(
            "MULTIPLE_STAGE_PREDICTION_RESULT_EXPIRES_SECONDS", "result_expires_seconds"
        ),
        description="How long a heavy job's state and result are kept",
    )


class ApiSettings(ModelServiceSettings, QueueSettings):
    """The client-facing API: the light model in process, the heavy one through the queue."""

    model_config = SettingsConfigDict(env_prefix="MULTIPLE_STAGE_PREDICTION_API_")


class WorkerSettings(ModelServiceSettings, QueueSettings):
    """The Celery worker that runs the heavy model."""

    model_config = SettingsConfigDict(env_prefix="MULTIPLE_STAGE_PREDICTION_WORKER_")

    concurrency: int = Field(2, gt=0, description="Heavy jobs at once (prefork pool processes)")
    delay_seconds: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Injected slowness: extra time per heavy prediction, to stand in for a "
        "heavy model",
    )
    failure_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Injected failure: the share of heavy jobs that fail (1: every one)",
    )
    visibility_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A job taken by a worker and not acknowledged this long goes back to the "
        "queue (the worker died): must exceed the slowest heavy job",
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the consuming worker beats; unhealthy after 3 missed"
    )
    restore_interval_seconds: float = Field(
        5.0, gt=0, description="How often a worker looks for jobs of a dead worker"
    )
