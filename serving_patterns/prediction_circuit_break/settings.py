"""Settings of the prediction circuit break pattern's services: the shedding proxy and the
predictor. (The nginx variant's settings are its compose environment, which its template,
nginx/predict.conf.template, reads.)"""

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, ServiceSettings


class ProxySettings(ServiceSettings):
    """The client-facing proxy: sheds what is over the limit, breaks the circuit to a failing
    predictor (env prefix PREDICTION_CIRCUIT_BREAK_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_CIRCUIT_BREAK_PROXY_")

    predictor_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8091"), description="Base URL of the prediction server"
    )
    max_in_flight: int = Field(
        16,
        gt=0,
        description="Most predictions at once at the predictor (its capacity); a request over "
        "it is answered 503 with the fallback body at once, and never reaches the predictor",
    )
    retry_after_seconds: int = Field(
        1, gt=0, description="Retry-After of a shed request: when a slot is likely free again"
    )
    failure_threshold: int = Field(
        5,
        gt=0,
        description="Consecutive predictor failures (5xx, unreachable, timeout) that open the "
        "circuit; a success in between starts the count again",
    )
    open_seconds: float = Field(
        5.0,
        gt=0,
        description="How long an open circuit answers with the fallback before one request "
        "goes through as a probe (half-open): its success closes the circuit, its failure "
        "opens it again",
    )
    timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Deadline on the whole predictor call: then 504"
    )


class PredictorSettings(ModelServiceSettings):
    """The prediction server (env prefix PREDICTION_CIRCUIT_BREAK_PREDICTOR_)."""

    model_config = SettingsConfigDict(env_prefix="PREDICTION_CIRCUIT_BREAK_PREDICTOR_")

    delay_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description="Artificial latency added to every prediction (a model that takes its time, "
        "so that predictions overlap and the limit on them shows)",
    )
