"""Settings of the two services: prep (env prefix PREP_PRED_PREP_), pred (PREP_PRED_PRED_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ModelServiceSettings, ServiceSettings


class PrepSettings(ServiceSettings):
    """The preprocess service: raw images in, features out to pred."""

    model_config = SettingsConfigDict(env_prefix="PREP_PRED_PREP_")

    preprocess_path: str = Field(
        "models/digits/preprocess.json",
        description="Fitted preprocessing parameters, from the training run that made the model",
    )
    pred_url: str = Field("http://127.0.0.1:8041", description="Base URL of the prediction service")
    pred_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="Deadline on the whole call to pred (connect, send, wait, read): then 504",
    )
    pred_max_connections: int = Field(100, gt=0, description="Size of the connection pool to pred")
    pred_max_in_flight: int = Field(
        200,
        gt=0,
        description="Most calls to pred at once, waiting for a connection or holding one; "
        "past it a request gets 503 at once",
    )
    max_rows: int = Field(100, gt=0, description="Most images one /predict request may carry")


class PredSettings(ModelServiceSettings):
    """The prediction service: preprocessed features in, predictions out (onnxruntime only)."""

    model_config = SettingsConfigDict(env_prefix="PREP_PRED_PRED_")

    model_dir: str = Field("models/digits", description="Directory of model.onnx and model.json")
