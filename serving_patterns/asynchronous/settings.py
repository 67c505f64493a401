"""Settings of the asynchronous pattern, one class per service: proxy, worker, sink."""

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, ServiceSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = "predictions"


class ProxySettings(ModelServiceSettings):
    """The proxy reads the model card (for /metadata and row checks) but never runs the model."""

    model_config = SettingsConfigDict(env_prefix="ASYNCHRONOUS_PROXY_")

    redis_url: str = Field(REDIS_URL, description="Redis: the queue (broker) and the job records")
    queue: str = Field(QUEUE, description="Queue (Redis list) the workers consume")
    max_queue_length: int = Field(
        100_000, gt=0, description="Submits are refused with 503 while this many jobs wait"
    )
    job_ttl_seconds: int = Field(86_400, gt=0, description="How long a job record is kept")
    redis_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest wait for a pooled Redis connection, and then for Redis's answer, "
        "before a request answers 503",
    )
    redis_max_connections: int = Field(50, gt=0, description="Size of the Redis connection pool")
    redis_max_in_flight: int = Field(
        1000,
        gt=0,
        description="Most requests at once waiting for a pooled Redis connection or holding one; "
        "past it a request gets 503 with Retry-After at once",
    )


class WorkerSettings(ModelServiceSettings):
    """A Celery worker: takes jobs from the queue, predicts, writes the job record."""

    model_config = SettingsConfigDict(env_prefix="ASYNCHRONOUS_WORKER_")

    redis_url: str = Field(REDIS_URL, description="Redis: the queue (broker) and the job records")
    queue: str = Field(QUEUE, description="Queue (Redis list) to consume")
    pool: Literal["solo", "threads", "prefork"] = Field(
        "solo", description="Celery pool: solo runs tasks in the consuming process"
    )
    concurrency: int = Field(1, gt=0, description="Tasks at once per worker (threads/prefork)")
    prefetch_multiplier: int = Field(
        1, gt=0, description="Messages reserved per concurrency slot before they run"
    )
    visibility_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A job taken but not acknowledged this long goes back to the queue; "
        "must exceed the longest job",
    )
    restore_interval_seconds: float = Field(
        5.0, gt=0, description="How often a worker looks for jobs of a dead worker"
    )
    max_attempts: int = Field(3, gt=0, description="Attempts before a job is dead-lettered")
    retry_backoff_seconds: float = Field(
        0.5, ge=0, description="Wait before the 2nd attempt; doubles for each later one"
    )
    model_delay_seconds: float = Field(
        0.0, ge=0, description="Extra time per prediction, to stand in for a slow model"
    )
    dead_letter_limit: int = Field(10_000, gt=0, description="Newest dead letters kept")
    results_to_sink: bool = Field(
        True,
        description="Append each finished job to the list the sink reads; turn off when no "
        "sink runs (clients poll), or the list grows without end",
    )
    redis_outage_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a job waits for Redis to answer again before the worker exits "
        "(non-zero, for the restart policy)",
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the consuming worker beats; unhealthy after 3 missed"
    )
    sweep_seconds: float = Field(
        5.0, gt=0, description="How often a worker looks for jobs whose message was lost"
    )
    lost_after_seconds: float = Field(
        10.0,
        ge=0,
        description="How long a pending job's message must be missing (neither queued nor "
        "taken) before it is queued again",
    )

    @model_validator(mode="after")
    def _restore_within_timeout(self) -> "WorkerSettings":
        if self.restore_interval_seconds > self.visibility_timeout_seconds:
            raise ValueError("restore_interval_seconds must not exceed visibility_timeout_seconds")
        return self


class SinkSettings(ServiceSettings):
    """The result sink: finished predictions from Redis into the inference table."""

    model_config = SettingsConfigDict(env_prefix="ASYNCHRONOUS_SINK_")

    redis_url: str = Field(REDIS_URL, description="Redis, where workers leave finished jobs")
    database_url: str = Field(
        "sqlite:///.local/asynchronous/inferences.db",
        description="SQLAlchemy URL of the inference database (SQLite file or PostgreSQL)",
    )
    batch_size: int = Field(500, gt=0, description="Most rows written in one transaction")
    poll_seconds: float = Field(0.1, gt=0, description="Wait before looking again when idle")
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the sink's loop beats; unhealthy after 3 missed"
    )
