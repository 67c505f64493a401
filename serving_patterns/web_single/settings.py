"""Settings of the web single service (env prefix WEB_SINGLE_)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings


class Settings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEB_SINGLE_")
