"""Settings of the offline only pattern's services: online_ab_test's proxy, model servers,
recorder and events collector, each read with this pattern's prefix (OFFLINE_ONLY_<SERVICE>_).
The fields, their defaults and their checks are online_ab_test's; what differs is named here:
model B is the candidate (train.py's export), and B's share at start is 0, the candidate not
yet released (release.py gives it its share)."""

from typing import Annotated

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from qa_patterns.online_ab_test import settings as ab
from qa_patterns.online_ab_test.split import Share

# The predictions and the client events, in one database, for the recorder, the events
# collector and the guard (online_ab_test's report).
DatabaseUrl = Annotated[
    str,
    Field(
        "sqlite:///.local/offline_only/inferences.db",
        validation_alias=AliasChoices("OFFLINE_ONLY_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL of the inferences and client events: sqlite:///file.db or "
        "postgresql+psycopg://user@host/db",
    ),
]


class ProxySettings(ab.ProxySettings):
    """online_ab_test's splitting proxy (env prefix OFFLINE_ONLY_PROXY_)."""

    model_config = SettingsConfigDict(env_prefix="OFFLINE_ONLY_PROXY_")

    b_percent: Share = Field(
        0.0,
        description="The candidate's share at start, in %: 0 until a release gives it one "
        "(PUT /weights: 100 for the offline-only release, 10 for the A/B test)",
    )


class ModelASettings(ab.ModelASettings):
    """The current model, recorded as variant a (env prefix OFFLINE_ONLY_MODEL_A_)."""

    model_config = SettingsConfigDict(env_prefix="OFFLINE_ONLY_MODEL_A_")


class ModelBSettings(ab.ModelBSettings):
    """The candidate, recorded as variant b (env prefix OFFLINE_ONLY_MODEL_B_)."""

    model_config = SettingsConfigDict(env_prefix="OFFLINE_ONLY_MODEL_B_")

    model_dir: str = Field(
        "models/offline_only_candidate", description="Directory of the candidate (train.py)"
    )


class RecorderSettings(ab.RecorderSettings):
    """The inference log's stream into the inferences table (env prefix OFFLINE_ONLY_RECORDER_)."""

    model_config = SettingsConfigDict(env_prefix="OFFLINE_ONLY_RECORDER_")

    database_url: DatabaseUrl


class EventsSettings(ab.EventsSettings):
    """What users did after a prediction (env prefix OFFLINE_ONLY_EVENTS_)."""

    model_config = SettingsConfigDict(env_prefix="OFFLINE_ONLY_EVENTS_")

    database_url: DatabaseUrl
