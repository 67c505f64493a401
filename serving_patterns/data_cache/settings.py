"""Settings of the data cache pattern's services: the proxy, the warmer, the seed and the predictor.

Each reads its own settings under DATA_CACHE_<SERVICE>_. One is the pattern's, one name for every
service that touches the records: DATA_CACHE_DATABASE_URL (an SQLite file by default, PostgreSQL
in compose; plain DATABASE_URL is the fallback, as local mode's servers have it).
"""

from typing import Annotated

from pydantic import AliasChoices, BaseModel, Field, HttpUrl
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ModelServiceSettings, UpstreamSettings

DatabaseUrl = Annotated[
    str,
    Field(
        "sqlite:///.local/data_cache.db",
        validation_alias=AliasChoices("DATA_CACHE_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL of the records: sqlite:///file.db or postgresql://user@host/db",
    ),
]


class CacheSettings(BaseModel):
    """What the proxy and the warmer both need to read and write the same entries (a mixin: each
    reads them under its own prefix)."""

    database_url: DatabaseUrl
    database_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest wait for the database: a pooled connection, connecting, a statement",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis that holds the preprocessed records"
    )
    redis_timeout_seconds: float = Field(
        0.5, gt=0, description="Longest wait for Redis (connecting, then each answer)"
    )
    ttl_seconds: float = Field(
        3600.0, gt=0, description="How long a preprocessed record stays in the cache"
    )
    key_prefix: str = Field(
        "data-cache", min_length=1, description="Prefix of the cache's keys in Redis"
    )
    preprocess_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Artificial cost of preprocessing one record (a heavier feature pipeline)",
    )


class ProxySettings(UpstreamSettings, CacheSettings):
    """The client-facing proxy: the records API and POST /predict by record id (env prefix
    DATA_CACHE_PROXY_; the predictor calls bounded by UpstreamSettings)."""

    model_config = SettingsConfigDict(env_prefix="DATA_CACHE_PROXY_", populate_by_name=True)

    predictor_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8081"), description="Base URL of the prediction server"
    )
    database_pool_size: int = Field(
        5, gt=0, description="Connections to the database (reads run in threads, one each)"
    )
    redis_retry_seconds: float = Field(
        1.0,
        ge=0,
        description="After a Redis failure, how long requests skip the cache before it is tried "
        "again (a hung Redis costs one request a timeout, not every request)",
    )
    redis_max_connections: int = Field(50, gt=0, description="Size of the Redis connection pool")


class WarmerSettings(BaseSettings, CacheSettings):
    """The pre-warm job: preprocesses new and changed records into the cache (env prefix
    DATA_CACHE_WARMER_)."""

    model_config = SettingsConfigDict(
        env_prefix="DATA_CACHE_WARMER_", extra="ignore", frozen=True, populate_by_name=True
    )

    log_level: str = Field("INFO", description="Python log level")
    poll_seconds: float = Field(
        1.0, gt=0, description="Pause between passes once it has caught up with the table"
    )
    batch_size: int = Field(500, gt=0, description="Records read and written per pass at most")
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="Beat interval: the healthcheck fails after three missed"
    )


class SeedSettings(BaseSettings):
    """The demo data: creates the tables and tops the records up to `records` rows (env prefix
    DATA_CACHE_SEED_)."""

    model_config = SettingsConfigDict(
        env_prefix="DATA_CACHE_SEED_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: DatabaseUrl
    log_level: str = Field("INFO", description="Python log level")
    records: int = Field(150, ge=0, description="Top the records table up to this many rows")


class PredictorSettings(ModelServiceSettings):
    """The prediction server (env prefix DATA_CACHE_PREDICTOR_)."""

    model_config = SettingsConfigDict(env_prefix="DATA_CACHE_PREDICTOR_")

    delay_seconds: float = Field(
        0.0, ge=0, le=300, description="Artificial latency added to every prediction"
    )
