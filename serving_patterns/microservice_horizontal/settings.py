"""Settings of the pattern's services: the proxy and the model servers it fans out to.

The model servers run the same code (models.py) with different model directories; each has a
class of its own only for its environment prefix (MICROSERVICE_HORIZONTAL_<SERVICE>_). Which of
them the proxy asks is the proxy's BACKENDS setting alone.
"""

from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import ModelServiceSettings, ServiceSettings


class ProxySettings(ServiceSettings):
    """The client-facing proxy (env prefix MICROSERVICE_HORIZONTAL_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_HORIZONTAL_PROXY_")

    backends: Annotated[dict[str, str], NoDecode] = Field(
        {
            "forest": "http://127.0.0.1:8061",
            "svm": "http://127.0.0.1:8062",
            "mlp": "http://127.0.0.1:8063",
        },
        min_length=1,
        description="The models every request goes to, as name=base URL pairs separated by "
        "commas (forest=http://forest:8061,svm=http://svm:8062): add or remove one here alone",
    )
    model_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Deadline on each model's whole call: a model later than this is marked "
        "timeout and the others' answers are returned",
    )
    max_connections: int = Field(100, gt=0, description="Connection pool size, per model")
    max_in_flight: int = Field(
        200,
        gt=0,
        description="Most calls at once to one model, waiting for a connection or holding one; "
        "past it that model is marked error at once",
    )
    max_rows: int = Field(100, gt=0, description="Most rows one request may carry")

    @field_validator("backends", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        """name=url,name=url (an environment variable) into a mapping; a mapping as it is."""
        if not isinstance(value, str):
            return value
        backends = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            name, equals, url = pair.partition("=")
            if not (equals and name.strip() and url.strip()):
                raise ValueError(f"{pair!r} is not name=url")
            if name.strip() in backends:
                raise ValueError(f"backend {name.strip()!r} is named twice")
            backends[name.strip()] = url.strip()
        return backends


class InjectedDelay(BaseModel):
    """A field every model server has: a mixin, so that only the subclasses are settings."""

    delay_ms: int = Field(0, ge=0, le=300_000, description="Artificial latency per prediction, ms")


class ForestSettings(ModelServiceSettings, InjectedDelay):
    """A random forest on iris (env prefix MICROSERVICE_HORIZONTAL_FOREST_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_HORIZONTAL_FOREST_")

    model_dir: str = Field("models/iris_forest", description="Directory of the exported model")


class SvmSettings(ModelServiceSettings, InjectedDelay):
    """A support vector machine on iris (env prefix MICROSERVICE_HORIZONTAL_SVM_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_HORIZONTAL_SVM_")

    model_dir: str = Field("models/iris_svm", description="Directory of the exported model")


class MlpSettings(ModelServiceSettings, InjectedDelay):
    """A small neural network on iris (env prefix MICROSERVICE_HORIZONTAL_MLP_)."""

    model_config = SettingsConfigDict(env_prefix="MICROSERVICE_HORIZONTAL_MLP_")

    model_dir: str = Field("models/iris_mlp", description="Directory of the exported model")
