"""The preprocessing artefact is the one fitted with the model: same run, same version."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from serving_patterns.prep_pred.preprocessing import Preprocessor
from serving_patterns.prep_pred.schemas import SAMPLE_FEATURES, SAMPLE_IMAGE
from shared.model import Predictor


def accuracy(preprocessor: Preprocessor, model: Predictor) -> float:
    digits = load_digits()
    features = preprocessor.transform(digits.images.astype(int).tolist()).astype(np.float32)
    return float((model.predict_proba(features).argmax(axis=1) == digits.target).mean())


def test_training_writes_both_artefacts_with_one_version_and_binds_them(digits_dir: Path) -> None:
    preprocess_bytes = (digits_dir / "preprocess.json").read_bytes()
    card = json.loads((digits_dir / "model.json").read_text())

    assert json.loads(preprocess_bytes)["version"] == card["version"] == "1.0.0"
    # The model records which preprocessing it was fitted with, byte for byte.
    assert card["preprocess_sha256"] == hashlib.sha256(preprocess_bytes).hexdigest()


def test_training_is_deterministic(digits_dir: Path, tmp_path: Path) -> None:
    from shared.training import train_digits

    train_digits(tmp_path)

    for name in ("preprocess.json", "model.onnx", "model.json"):
        assert (tmp_path / name).read_bytes() == (digits_dir / name).read_bytes(), name


def test_numpy_preprocessing_then_onnx_model_classifies_the_digits(digits_dir: Path) -> None:
    preprocessor = Preprocessor(digits_dir / "preprocess.json")
    model = Predictor(digits_dir)

    assert accuracy(preprocessor, model) > 0.95
    # The features prep computes for the sample are the ones training computed with scikit-learn.
    np.testing.assert_allclose(
        preprocessor.transform([SAMPLE_IMAGE])[0], model.card.sample_input[0], atol=1e-5
    )
    np.testing.assert_allclose(SAMPLE_FEATURES, model.card.sample_input[0], atol=1e-6)


@pytest.mark.parametrize(
    "drift",
    [
        pytest.param(lambda p: setattr(p, "components", -p.components), id="refit-flipped-signs"),
        pytest.param(lambda p: setattr(p, "pixel_max", 1.0), id="scaling-forgotten"),
    ],
)
def test_a_preprocessing_developed_apart_fits_the_shape_and_breaks_the_answers(
    digits_dir: Path, drift: object
) -> None:
    # The doc's warning, measured: such features have the right width, so only the version
    # check stops them. Flipped PCA signs (what a refit can give) or a forgotten scaling step.
    preprocessor = Preprocessor(digits_dir / "preprocess.json")
    model = Predictor(digits_dir)
    drift(preprocessor)  # type: ignore[operator]

    assert preprocessor.transform([SAMPLE_IMAGE]).shape == (1, len(model.card.feature_names))
    assert accuracy(preprocessor, model) < 0.8


def test_preprocessor_refuses_an_artefact_fitted_on_other_images(
    digits_dir: Path, tmp_path: Path
) -> None:
    params = json.loads((digits_dir / "preprocess.json").read_text())
    params["image_shape"] = [28, 28]
    (tmp_path / "preprocess.json").write_text(json.dumps(params))

    with pytest.raises(ValueError, match=r"fitted on \[28, 28\] images"):
        Preprocessor(tmp_path / "preprocess.json")
