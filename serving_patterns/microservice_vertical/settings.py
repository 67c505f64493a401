"""Settings of the pattern's services: the proxy and the three stages' model servers.

The stages run the same model-server code (stages.py) with different model directories; each has
a class of its own only for its environment prefix (MICROSERVICE_VERTICAL_<STAGE>_).
"""

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, ServiceSettings


class ProxySettings(ServiceSettings):
    """The client-facing proxy that runs the chain (env prefix MICROSERVICE_VERTICAL_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_VERTICAL_PROXY_")

    coarse_url: str = Field("http://127.0.0.1:8051", description="Base URL of stage 1, coarse")
    low_url: str = Field("http://127.0.0.1:8052", description="Base URL of the 0-4 specialist")
    high_url: str = Field("http://127.0.0.1:8053", description="Base URL of the 5-9 specialist")
    stage_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Deadline on each stage's whole call (connect, send, wait, read): then 504",
    )
    max_connections: int = Field(100, gt=0, description="Connection pool size, per stage")
    max_in_flight: int = Field(
        200,
        gt=0,
        description="Most calls at once to one stage, waiting for a connection or holding one; "
        "past it a request gets 503 at once",
    )
    max_rows: int = Field(100, gt=0, description="Most images one request may carry")


class InjectedDelay(BaseModel):
    """A field every stage server has: a mixin, so that only the subclasses are settings."""

    delay_ms: int = Field(
        0,
        ge=0,
        le=300_000,
        description="Artificial latency added to every prediction, in ms (to show the chain's sum)",
    )


class CoarseSettings(ModelServiceSettings, InjectedDelay):
    """Stage 1: which half of the digits (env prefix MICROSERVICE_VERTICAL_COARSE_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_VERTICAL_COARSE_")

    model_dir: str = Field("models/digits_coarse", description="Directory of the exported model")


class LowSettings(ModelServiceSettings, InjectedDelay):
    """Stage 2 for 0-4: which digit (env prefix MICROSERVICE_VERTICAL_LOW_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_VERTICAL_LOW_")

    model_dir: str = Field("models/digits_low", description="Directory of the exported model")


class HighSettings(ModelServiceSettings, InjectedDelay):
    """Stage 2 for 5-9: which digit (env prefix MICROSERVICE_VERTICAL_HIGH_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_VERTICAL_HIGH_")

    model_dir: str = Field("models/digits_high", description="Directory of the exported model")
