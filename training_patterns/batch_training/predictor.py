"""The predictor: the champion, served by the model server every pattern uses.

    .venv/bin/uvicorn training_patterns.batch_training.predictor:create_app --factory \\
        --port 8150   # BATCH_TRAINING_PREDICTOR_MODEL_DIR: .local/batch_training/champion

The model directory is what the trainer exported and registered, as fetch downloaded it:
shared.predict_route.serve_model serves it as it serves the models baked into images (POST
/predict, the Open Inference Protocol under /v2, /metadata with the registry's version). A new
champion is served after fetch runs again and the predictor restarts.
"""

from fastapi import FastAPI

from shared.predict_route import serve_model
from training_patterns.batch_training.settings import PredictorSettings


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    return serve_model(
        "batch-training-predictor", settings or PredictorSettings(), 0, __doc__ or ""
    )
