"""Settings of the online A/B test pattern's services, one class per compose service: the
splitting proxy, the two model servers (A, the current model; B, the new one), the recorder of
their predictions, and the collector of client events. (The nginx variant's settings are its
compose environment and nginx/split/split.conf.)"""

from typing import Annotated

from pydantic import AliasChoices, Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from qa_patterns.online_ab_test.split import Share
from shared.inference_log import RecorderSettings as SharedRecorderSettings
from shared.inference_log import RecordingSettings
from shared.settings import ServiceSettings, UpstreamSettings

# The predictions and the client events in one database, read alike by the recorder, the
# events collector and the report: SQLite by default, PostgreSQL in compose.
DatabaseUrl = Annotated[
    str,
    Field(
        "sqlite:///.local/online_ab_test/inferences.db",
        validation_alias=AliasChoices(
            "ONLINE_AB_TEST_DATABASE_URL", "DATABASE_URL", "database_url"
        ),
        description="SQLAlchemy URL of the inferences and client events: sqlite:///file.db or "
        "postgresql+psycopg://user@host/db",
    ),
]


class ProxySettings(UpstreamSettings):
    """The client-facing proxy: splits /predict between A and B by weight, sticky by user id
    (env prefix ONLINE_AB_TEST_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_AB_TEST_PROXY_")

    model_a_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8221"), description="Base URL of model A, the current model"
    )
    model_b_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8222"), description="Base URL of model B, the new model"
    )
    events_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8223"),
        description="Base URL of the client events collector (POST /events is passed on to it)",
    )
    b_percent: Share = Field(
        10.0,
        description="B's share of the traffic at start, in % with at most two decimals; "
        "PUT /weights changes it while running, 0 sends everything to A",
    )


class ModelASettings(RecordingSettings):
    """Model A, the current model: records its predictions as variant a
    (env prefix ONLINE_AB_TEST_MODEL_A_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_AB_TEST_MODEL_A_")

    model_dir: str = Field("models/iris", description="Directory of the exported model")
    variant: str = Field("a", pattern=r"^[a-z0-9_-]{1,32}$", description="Its records' name")


class ModelBSettings(RecordingSettings):
    """Model B, the new model: records its predictions as variant b
    (env prefix ONLINE_AB_TEST_MODEL_B_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_AB_TEST_MODEL_B_")

    model_dir: str = Field("models/iris_svm", description="Directory of the exported model")
    variant: str = Field("b", pattern=r"^[a-z0-9_-]{1,32}$", description="Its records' name")


class RecorderSettings(SharedRecorderSettings):
    """The recorder: the inference log's stream into the inferences table
    (env prefix ONLINE_AB_TEST_RECORDER_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_AB_TEST_RECORDER_")

    database_url: DatabaseUrl


class EventsSettings(ServiceSettings):
    """The client events collector: what users did after a prediction (a conversion), keyed by
    the prediction's request id (env prefix ONLINE_AB_TEST_EVENTS_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_AB_TEST_EVENTS_")

    database_url: DatabaseUrl
    database_timeout_seconds: float = Field(
        2.0, gt=0, description="Longest wait for the database: then 503"
    )
