"""Settings of the digits model service: the contract's, read from SERVING_TEMPLATE_DIGITS_*."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings


class Settings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_TEMPLATE_DIGITS_")

    model_dir: str = Field("models/digits", description="Directory of the exported model")
