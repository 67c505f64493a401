"""The two request bodies of prep-pred: raw images for prep, preprocessed features for pred.

Both services import this module; it holds only pydantic models, so it pulls neither numpy nor
onnxruntime into either image.
"""

from typing import Annotated, Any, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, field_validator

from shared.schemas import PredictResponse, Row

IMAGE_SIDE = 8  # the raw input: an 8x8 grid, as scikit-learn's digits data set has them
PIXEL_MAX = 16  # intensities are whole numbers 0..16


def _a_number(value: object) -> object:
    # pydantic would read "3" and true as 3 and 1; 3.0 (digits.images as floats) stays welcome.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return value


Pixel = Annotated[int, BeforeValidator(_a_number), Field(ge=0, le=PIXEL_MAX)]
ImageRow = Annotated[list[Pixel], Field(min_length=IMAGE_SIDE, max_length=IMAGE_SIDE)]
Image = Annotated[list[ImageRow], Field(min_length=IMAGE_SIDE, max_length=IMAGE_SIDE)]

# Digit 0 of the data set, and what the preprocessing fitted with model 1.0.0 makes of it.
SAMPLE_IMAGE = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]
SAMPLE_FEATURES = [
    -0.159426, -1.576293, 0.970859, -1.286253, 0.834512, -0.961322, -0.593603, -0.409848,
    -0.220025, -0.263781, -0.417573, 0.481574, -0.085459, -0.906685, -0.448408, -1.320573,
    -0.203769, -0.22228, 0.7357, 1.181389, -0.012485, 0.174693, 0.616702, 0.162875,
]  # fmt: skip
# The examples in JSON's type: JsonValue's lists are invariant, so a list[list[int]] is not one
# to mypy, although it is JSON.
IMAGE_EXAMPLE = cast(JsonValue, SAMPLE_IMAGE)
FEATURES_EXAMPLE = cast(JsonValue, SAMPLE_FEATURES)


class ImagesRequest(BaseModel):
    """What the client sends to prep: raw images, nothing computed."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"data": [IMAGE_EXAMPLE]}]}
    )

    data: list[Image] = Field(
        min_length=1,
        description=f"One or more {IMAGE_SIDE}x{IMAGE_SIDE} images of intensities 0..{PIXEL_MAX}",
    )


class FeaturesRequest(BaseModel):
    """What prep sends to pred: model input, stamped with the version of the preprocessing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"data": [FEATURES_EXAMPLE], "preprocess_version": "1.0.0"}]
        },
    )

    data: list[Row] = Field(min_length=1, description="One row of preprocessed features per input")
    preprocess_version: str = Field(
        max_length=64,
        description="Version of the preprocessing that made the features; must equal the model's",
    )

    @field_validator("data", mode="before")
    @classmethod
    def _not_raw_images(cls, data: Any) -> Any:
        # Raw input sent here by mistake gets a message that says so, not 64 type errors.
        if isinstance(data, list) and any(
            isinstance(row, list) and any(isinstance(value, list) for value in row) for row in data
        ):
            raise ValueError(
                "these look like raw images: pred takes rows of preprocessed features; "
                "send raw images to the prep service"
            )
        return data


# pred's answer to SAMPLE_FEATURES, and the model's to SAMPLE_IMAGE through prep: the examples
# /docs shows are what the services answer (tests/test_contract.py sends them).
SAMPLE_ANSWER: dict[str, JsonValue] = {
    "predictions": [
        {
            "label": "0",
            "probabilities": {
                "0": 0.9979182481765747,
                "1": 2.227302786650398e-08,
                "2": 1.5478090062970296e-05,
                "3": 0.00010640486289048567,
                "4": 0.0006607820396311581,
                "5": 3.894342444255017e-05,
                "6": 1.2527832950581796e-05,
                "7": 0.0008334019221365452,
                "8": 0.000186645207577385,
                "9": 0.00022763242304790765,
            },
        }
    ],
    "model_version": "1.0.0",
    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
}


class PredResponse(PredictResponse):
    """pred's answer: the contract's, with a digit for an example."""

    model_config = ConfigDict(json_schema_extra={"examples": [SAMPLE_ANSWER]})


class PrepResponse(PredictResponse):
    """pred's answer, plus the version of the preprocessing prep applied."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**SAMPLE_ANSWER, "preprocess_version": "1.0.0"}]}
    )

    preprocess_version: str = Field(description="Version of the preprocessing prep applied")
