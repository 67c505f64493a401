"""The request and response bodies of the API contract every prediction service keeps."""

from typing import Annotated, Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    JsonValue,
    Strict,
    ValidationError,
)

FLOAT32_MAX = 3.4028234e38


def _fits_float32(value: float) -> float:
    # Models take float32: a value beyond its range would reach the model as infinity.
    if abs(value) > FLOAT32_MAX:
        raise ValueError("beyond the float32 range of the model's input (about ±3.4e38)")
    return value


# Strict: a number, not a string of one nor a boolean (pydantic's lax mode would take "5.1" and
# true); an integer is a number.
Feature = Annotated[FiniteFloat, Strict(), AfterValidator(_fits_float32)]
Row = Annotated[list[Feature], Field(min_length=1)]


class UnscorableRows(ValueError):
    """Rows the model cannot score: finite inputs whose scores overflow (extreme values)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"rows {rows} are out of the model's numeric range")
        self.rows = rows


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]},
    )

    data: list[Row] = Field(min_length=1, description="One or more rows of raw feature values")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


# The iris model's answer to PredictRequest's example: /docs shows what the services answer
# (tests/test_contract.py sends the example and compares).
IRIS_SAMPLE_PREDICTIONS: list[JsonValue] = [
    {
        "label": "setosa",
        "probabilities": {
            "setosa": 0.9811189770698547,
            "versicolor": 0.01888057217001915,
            "virginica": 5.025005407333083e-07,
        },
    },
    {
        "label": "virginica",
        "probabilities": {
            "setosa": 0.0001324070617556572,
            "versicolor": 0.04671076685190201,
            "virginica": 0.9531568288803101,
        },
    },
]


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": IRIS_SAMPLE_PREDICTIONS,
                    "model_version": "1.0.0",
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                }
            ]
        }
    )

    predictions: list[Prediction]
    model_version: str
    request_id: str


class Metadata(BaseModel):
    model_name: str
    model_version: str
    feature_names: list[str]
    labels: list[str]
    input_schema: dict[str, Any]
    sample_input: dict[str, Any]
    extra: dict[str, Any] = {}


def check_rows(data: list[list[float]], feature_names: list[str] | None, max_rows: int) -> None:
    """422 naming the problem when the rows don't fit the model: too many, or the wrong width
    (not checked without feature_names: a service in front of the model leaves that to it)."""
    errors: list[dict[str, Any]] = []
    if len(data) > max_rows:
        errors.append(
            {
                "type": "too_long",
                "loc": ("body", "data"),
                "msg": f"at most {max_rows} rows per request, got {len(data)}",
                "input": len(data),
            }
        )
    if feature_names is not None:
        errors += _width_errors(data, feature_names)
    if errors:
        raise RequestValidationError(errors)


def _width_errors(data: list[list[float]], feature_names: list[str]) -> list[dict[str, Any]]:
    n, errors = len(feature_names), []
    for i, row in enumerate(data):
        if len(row) != n:
            errors.append(
                {
                    "type": "value_error",
                    "loc": ("body", "data", i),
                    "msg": f"expected {n} features ({', '.join(feature_names)}), got {len(row)}",
                    "input": row,
                }
            )
            if len(errors) >= 10:  # enough to name the problem, not a copy of a huge body
                break
    return errors


Body = TypeVar("Body", bound=BaseModel)


def parse_body(body: bytes, model: type[Body]) -> Body:
    """Validate a raw JSON body straight from bytes, with FastAPI's 422 shape on failure.

    The hot path of a model server: pydantic parses the bytes in one call, which costs about a
    quarter of what FastAPI's body dependency does for a one-row request. Declare the body in
    OpenAPI with `shared.service.add_hot_route`.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
