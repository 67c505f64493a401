"""In-process tests of the prediction service: it takes only preprocessed, versioned features."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving_patterns.prep_pred.pred import create_app
from serving_patterns.prep_pred.schemas import SAMPLE_FEATURES, SAMPLE_IMAGE
from serving_patterns.prep_pred.settings import PredSettings
from shared.testing import ready_client


@pytest.fixture
def pred(digits_dir: Path) -> Iterator[TestClient]:
    with ready_client(create_app(PredSettings(model_dir=str(digits_dir), max_rows=5))) as client:
        yield client


def test_predict_answers_from_preprocessed_features(pred: TestClient) -> None:
    response = pred.post(
        "/predict",
        json={"data": [SAMPLE_FEATURES], "preprocess_version": "1.0.0"},
        headers={"X-Request-ID": "pred-1"},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["predictions"][0]["label"] == "0"
    assert set(body["predictions"][0]["probabilities"]) == {str(d) for d in range(10)}
    assert body["model_version"] == "1.0.0"
    assert body["request_id"] == "pred-1"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        # The raw 8x8 image, as the client sends it to prep.
        ({"data": [SAMPLE_IMAGE], "preprocess_version": "1.0.0"}, "these look like raw images"),
        # The raw pixels flattened: numbers, but not the model's features.
        (
            {"data": [sum(SAMPLE_IMAGE, [])], "preprocess_version": "1.0.0"},
            "expected 24 features (pc_1, pc_2",
        ),
        # Features with no word on which preprocessing made them.
        ({"data": [SAMPLE_FEATURES]}, "preprocess_version"),
    ],
    ids=["image", "flattened-pixels", "unversioned-features"],
)
def test_predict_refuses_anything_but_preprocessed_features(
    pred: TestClient, payload: object, problem: str
) -> None:
    response = pred.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def test_predict_refuses_features_of_another_preprocessing_version(pred: TestClient) -> None:
    stale = {"data": [SAMPLE_FEATURES], "preprocess_version": "0.9.0"}

    response = pred.post("/predict", json=stale)

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "preprocessing version 0.9.0 does not match model version 1.0.0" in detail


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [SAMPLE_FEATURES] * 6, "preprocess_version": "1.0.0"}, "at most 5 rows"),
        ({"data": [], "preprocess_version": "1.0.0"}, "at least 1 item"),
        ({"data": [SAMPLE_FEATURES], "preprocess_version": "1.0.0", "x": 1}, "Extra inputs"),
    ],
)
def test_predict_rejects_bad_input_naming_the_problem(
    pred: TestClient, payload: object, problem: str
) -> None:
    response = pred.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def test_metadata_carries_a_sample_that_predicts(pred: TestClient) -> None:
    metadata = pred.get("/metadata").json()

    assert metadata["model_name"] == "digits"
    assert metadata["feature_names"][:2] == ["pc_1", "pc_2"]
    assert pred.post("/predict", json=metadata["sample_input"]).status_code == 200
