"""Settings of the two targets of the load test: web single's service run with one uvicorn
worker (env prefix LOADING_TEST_SINGLE_) and with several (LOADING_TEST_MULTI_). Same code, same
model, same bounds; only the number of processes differs, so the load test measures that."""

from pydantic_settings import SettingsConfigDict

from serving_patterns.web_single.settings import Settings as WebSingleSettings


class SingleSettings(WebSingleSettings):
    model_config = SettingsConfigDict(env_prefix="LOADING_TEST_SINGLE_")


class MultiSettings(WebSingleSettings):
    model_config = SettingsConfigDict(env_prefix="LOADING_TEST_MULTI_")
