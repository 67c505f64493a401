"""Settings of the two designs: the monolith (both models in one process) and the split one (a
proxy and one service per model). The models are the same in both: A reads iris measurements,
B 8x8 digit images."""

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, UpstreamSettings


class MonolithSettings(ModelServiceSettings):
    """Both models in one server (env prefix ALL_IN_ONE_MONOLITH_): model_dir is A's."""

    model_config = SettingsConfigDict(env_prefix="ALL_IN_ONE_MONOLITH_")

    model_dir: str = Field("models/iris", description="Directory of model A (iris)")
    model_b_dir: str = Field("models/digits_linear", description="Directory of model B (digits)")


class ASettings(ModelServiceSettings):
    """Model A's own service in the split design (env prefix ALL_IN_ONE_A_)."""

    model_config = SettingsConfigDict(env_prefix="ALL_IN_ONE_A_")

    model_dir: str = Field("models/iris", description="Directory of model A (iris)")


class BSettings(ModelServiceSettings):
    """Model B's own service in the split design (env prefix ALL_IN_ONE_B_)."""

    model_config = SettingsConfigDict(env_prefix="ALL_IN_ONE_B_")

    model_dir: str = Field("models/digits_linear", description="Directory of model B (digits)")


class ProxySettings(UpstreamSettings):
    """The split design's entry (env prefix ALL_IN_ONE_PROXY_): /a/... to A, /b/... to B."""

    model_config = SettingsConfigDict(env_prefix="ALL_IN_ONE_PROXY_")

    a_url: HttpUrl = Field(HttpUrl("http://127.0.0.1:8142"), description="Model A's service")
    b_url: HttpUrl = Field(HttpUrl("http://127.0.0.1:8143"), description="Model B's service")
    # UpstreamSettings bound each model's calls (max_connections, max_in_flight: per model).
    timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Deadline on each whole model call: then 504"
    )
    max_rows: int = Field(100, gt=0, description="Most rows one request may carry")
