"""Settings of the prediction cache pattern's two services: the caching proxy and the predictor."""

from typing import Literal

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, UpstreamSettings


class ProxySettings(UpstreamSettings):
    """The client-facing proxy: Redis first, the predictor on a miss (env prefix
    PREDICTION_CACHE_PROXY_; the predictor calls bounded by UpstreamSettings)."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_CACHE_PROXY_")

    predictor_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8071"), description="Base URL of the prediction server"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis that holds the cache")
    mode: Literal["sequential", "parallel"] = Field(
        "sequential",
        description="sequential: look up, predict only on a miss (the predictor is offloaded); "
        "parallel: look up and predict at once, the first answer wins (a miss costs no lookup, "
        "but the predictor sees every request)",
    )
    ttl_seconds: float = Field(
        3600.0, gt=0, description="How long a cached prediction is served before it is recomputed"
    )
    key_prefix: str = Field(
        "prediction-cache", min_length=1, description="Prefix of the cache's keys in Redis"
    )
    redis_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="Longest wait for Redis (connecting, then each answer); past it the request "
        "is predicted uncached",
    )
    redis_retry_seconds: float = Field(
        1.0,
        ge=0,
        description="After a Redis failure, how long requests skip the cache before it is tried "
        "again (a hung Redis costs one request a timeout, not every request)",
    )
    redis_max_connections: int = Field(50, gt=0, description="Size of the Redis connection pool")
    version_refresh_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the proxy reads the predictor's model version (GET /metadata): "
        "the longest a new version can go unnoticed",
    )
    max_rows: int = Field(
        100, gt=0, description="Most rows one request may carry; checked before the cache"
    )


class PredictorSettings(ModelServiceSettings):
    """The prediction server (env prefix PREDICTION_CACHE_PREDICTOR_)."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_CACHE_PREDICTOR_")

    delay_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description="Artificial latency added to every prediction (a slow model, to see what "
        "a hit saves)",
    )
