"""Settings of the batch pattern's services: seed, job, scheduler and the read API.

Each service reads its own settings under BATCH_<SERVICE>_ (BATCH_JOB_CHUNK_SIZE,
BATCH_SCHEDULER_SCHEDULE). Two are the pattern's, one name for every service: BATCH_LOG_LEVEL,
and BATCH_DATABASE_URL (an SQLite file by default, PostgreSQL when it, or plain DATABASE_URL,
points at one; the scheduler passes it on to the jobs it starts).
"""

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Literal

from croniter import croniter
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings

from shared.settings import ServiceSettings, job_config

# The two settings every service reads alike: named by an alias, outside the service's prefix.
DatabaseUrl = Annotated[
    str,
    Field(
        "sqlite:///.local/batch.db",
        validation_alias=AliasChoices("BATCH_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL: sqlite:///file.db or postgresql://user@host/db",
    ),
]
LogLevel = Annotated[
    str, Field("INFO", validation_alias="BATCH_LOG_LEVEL", description="Python log level")
]


class JobSettings(BaseSettings):
    """The batch job: score every row that lacks a prediction, then exit."""

    model_config = job_config("BATCH_JOB_", populate_by_name=True)

    database_url: DatabaseUrl
    log_level: LogLevel
    model_dir: str = Field("models/iris", description="Directory of the exported model")
    chunk_size: int = Field(
        20_000, gt=0, description="Rows per chunk: one read, one model call, one commit"
    )
    retry: Literal["all", "failed", "none"] = Field(
        "failed",
        description="When a chunk fails: score every chunk again (all), only the failed chunks "
        "(failed), or leave them to the next run (none)",
    )
    max_attempts: int = Field(3, ge=1, description="Passes a run makes at most (first + retries)")
    claim_timeout: float = Field(
        300.0,
        gt=0,
        description="PostgreSQL: seconds a process may hold a claimed chunk without a word to "
        "the database before the server ends its session and the chunk is claimed again (a "
        "process that dies gives its chunk up at once)",
    )
    finish_by: datetime | time | None = Field(
        None,
        description="Deadline: chunks not started by then are left for the next run. A time "
        "of day (06:00, UTC unless it has an offset) means its next occurrence",
    )

    @field_validator("finish_by", mode="before")
    @classmethod
    def _not_a_number(cls, value: object) -> object:
        # pydantic reads a number as a Unix timestamp: 0600 or 6.30 would be a deadline in 1970,
        # and every run would silently score nothing.
        if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
            raise ValueError(
                f"{value!r} is not a time of day (06:00) nor a date and time (2026-12-01T06:00Z)"
            )
        return value

    def deadline(self, started: datetime) -> datetime | None:
        """The moment after which the run starts no new chunk."""
        if self.finish_by is None:
            return None
        if isinstance(self.finish_by, datetime):
            return self.finish_by if self.finish_by.tzinfo else self.finish_by.replace(tzinfo=UTC)
        zone = self.finish_by.tzinfo or UTC
        local = started.astimezone(zone)
        candidate = datetime.combine(local.date(), self.finish_by.replace(tzinfo=None), zone)
        return candidate if candidate > local else candidate + timedelta(days=1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SeedSettings(BaseSettings):
    """The demo data: iris-like rows in the input table, a few of them unscorable."""

    model_config = job_config("BATCH_SEED_", populate_by_name=True)

    database_url: DatabaseUrl
    log_level: LogLevel
    rows: int = Field(10_000, ge=0, description="Top the input table up to this many rows")
    bad_every: int = Field(
        2_500, ge=0, description="Every Nth row gets a NULL or non-finite value (0: none)"
    )


class SchedulerSettings(BaseSettings):
    """The job management server: starts the job on a cron schedule."""

    model_config = job_config("BATCH_SCHEDULER_", populate_by_name=True)

    log_level: LogLevel
    schedule: str = Field(
        "*/5 * * * *", description="Cron expression (5 fields; a 6th gives seconds), in UTC"
    )
    heartbeat_file: str = Field(
        "/tmp/batch-scheduler.heartbeat", description="Touched while alive; read by the healthcheck"
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value


class ApiSettings(ServiceSettings):
    """The read API over the tables (/data/all, /data/predicted, /data/unpredicted, ...)."""

    model_config = job_config("BATCH_API_", populate_by_name=True)

    database_url: DatabaseUrl
    log_level: LogLevel
