"""Prediction service: preprocessed features in, predictions out, onnxruntime only.

It knows nothing of images: its input is the feature rows the prep service makes, stamped
with the version of the preprocessing that made them. Features from any other preprocessing
would be numbers of the right shape and the wrong meaning, so a version that does not equal
the model's is refused with 409, naming both.

    .venv/bin/uvicorn serving_patterns.prep_pred.pred:create_app --factory --port 8041
"""

from fastapi import FastAPI, HTTPException

from serving_patterns.prep_pred.schemas import FeaturesRequest, PredResponse
from serving_patterns.prep_pred.settings import PredSettings
from shared.logs import request_id_var
from shared.model import create_model_service
from shared.schemas import check_rows
from shared.service import BODY_ERRORS


def create_app(settings: PredSettings | None = None) -> FastAPI:
    settings = settings or PredSettings()
    app, model = create_model_service(
        "pred",
        settings,
        __doc__ or "",
        input_schema=FeaturesRequest,
        sample_input=lambda card: {"data": card.sample_input, "preprocess_version": card.version},
    )

    @app.post(
        "/predict",
        tags=["model"],
        responses={
            409: {"description": "Features made by a preprocessing of another version"},
            **BODY_ERRORS,
            422: {"description": "Not preprocessed features of the model's width"},
            503: {"description": "Model not loaded yet"},
        },
    )
    async def predict(body: FeaturesRequest) -> PredResponse:
        """Predict the digit of each row of preprocessed features (made by the prep service)."""
        predictor = model.require()
        version = predictor.card.version
        if body.preprocess_version != version:
            raise HTTPException(
                status_code=409,
                detail=(
                    f"preprocessing version {body.preprocess_version} does not match model "
                    f"version {version}: features must come from the preprocessing fitted "
                    "with this model"
                ),
            )
        check_rows(body.data, predictor.card.feature_names, settings.max_rows)
        return PredResponse(
            predictions=await predictor.apredict(body.data),
            model_version=version,
            request_id=request_id_var.get(),
        )

    return app
