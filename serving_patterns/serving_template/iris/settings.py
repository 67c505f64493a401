"""Settings of the iris model service: the contract's, read from SERVING_TEMPLATE_IRIS_*."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings


class Settings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_TEMPLATE_IRIS_")

    model_dir: str = Field("models/iris", description="Directory of the exported model")
