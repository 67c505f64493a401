"""Settings of the synchronous pattern's two services: the web app and the predictor."""

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, UpstreamSettings


class WebappSettings(UpstreamSettings):
    """The client-facing web app (env prefix SYNCHRONOUS_WEBAPP_); its predictor calls are
    bounded by UpstreamSettings' timeout_seconds, max_connections and max_in_flight."""

    model_config = SettingsConfigDict(env_prefix="SYNCHRONOUS_WEBAPP_")

    predictor_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8011"), description="Base URL of the prediction server"
    )
    max_rows: int = Field(
        100, gt=0, description="Most rows one request may carry; checked before the predictor call"
    )
    min_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Below this class probability the web app asks for a photo instead",
    )


class PredictorSettings(ModelServiceSettings):
    """The prediction server (env prefix SYNCHRONOUS_PREDICTOR_)."""

    model_config = SettingsConfigDict(env_prefix="SYNCHRONOUS_PREDICTOR_")

    delay_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description="Artificial latency added to every prediction (to show blocking and timeouts)",
    )
