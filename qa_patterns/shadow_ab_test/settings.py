"""Settings of the shadow A/B test pattern's services, one class per compose service: the
mirroring proxy, model A (the current model, whose answers the clients get), model B (the new
one, in the shadow) and the recorder of their predictions. (The nginx variant's settings are
its compose environment, which nginx/shadow.conf.template reads.)"""

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from shared.inference_log import RecorderSettings as SharedRecorderSettings
from shared.inference_log import RecordingSettings
from shared.settings import ServiceSettings


class ProxySettings(ServiceSettings):
    """The client-facing proxy: answers with A, copies every request to B (env prefix
    SHADOW_AB_TEST_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="SHADOW_AB_TEST_PROXY_")

    model_a_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8211"), description="Base URL of model A, whose answer is sent"
    )
    model_b_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8212"), description="Base URL of model B, in the shadow"
    )
    shadow: bool = Field(
        True, description="Copy requests to B at start; PUT /shadow changes it while running"
    )
    a_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Deadline on a whole call to A: then 504 to the client"
    )
    b_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Deadline on a copy sent to B: then the proxy lets go of it (B still "
        "records its answer if it gives one)",
    )
    b_max_in_flight: int = Field(
        200,
        gt=0,
        description="Most copies waiting on B at once; a copy beyond them is skipped and "
        "counted, so a slow B costs the proxy a bounded amount of memory",
    )


class ModelASettings(RecordingSettings):
    """Model A, the current model (env prefix SHADOW_AB_TEST_MODEL_A_)."""

    model_config = SettingsConfigDict(env_prefix="SHADOW_AB_TEST_MODEL_A_")

    model_dir: str = Field("models/iris", description="Directory of model A's exported model")
    variant: str = Field("a", pattern=r"^[a-z0-9_-]{1,32}$", description="Its records' name")
    delay_seconds: float = Field(
        0.0, ge=0, le=300, description="Artificial latency added to every prediction"
    )
    fail_percent: float = Field(
        0.0, ge=0, le=100, description="Share of /predict answered 500 (a broken model)"
    )


class ModelBSettings(ModelASettings):
    """Model B, the new model in the shadow (env prefix SHADOW_AB_TEST_MODEL_B_)."""

    model_config = SettingsConfigDict(env_prefix="SHADOW_AB_TEST_MODEL_B_")

    model_dir: str = Field(
        "models/iris_forest", description="Directory of model B's exported model"
    )
    variant: str = Field("b", pattern=r"^[a-z0-9_-]{1,32}$", description="Its records' name")


class RecorderSettings(SharedRecorderSettings):
    """The recorder: the inference log's stream into the inferences table (env prefix
    SHADOW_AB_TEST_RECORDER_)."""

    model_config = SettingsConfigDict(env_prefix="SHADOW_AB_TEST_RECORDER_")

    database_url: str = Field(
        "sqlite:///.local/shadow_ab_test/inferences.db",
        description="SQLAlchemy URL of the inference database: sqlite:///file.db or "
        "postgresql+psycopg://user@host/db",
    )
