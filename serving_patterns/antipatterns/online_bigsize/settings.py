"""Settings of the two model servers: the same code and API, a different model directory.

Each has a class of its own only for its environment prefix (ONLINE_BIGSIZE_<SERVICE>_).
"""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings


class SmallSettings(ModelServiceSettings):
    """The small fast model: a linear model on the 64 pixels (env prefix ONLINE_BIGSIZE_SMALL_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_BIGSIZE_SMALL_")

    model_dir: str = Field("models/digits_linear", description="Directory of the exported model")


class BigSettings(ModelServiceSettings):
    """The big slow model: nearest neighbours over 33,675 reference images (env prefix
    ONLINE_BIGSIZE_BIG_)."""

    model_config = SettingsConfigDict(env_prefix="ONLINE_BIGSIZE_BIG_")

    model_dir: str = Field("models/digits_knn", description="Directory of the exported model")
