"""End to end through local mode: the trainer job exports, the server (the serving image's
code) serves it, and its answers are the trained model's on the training tensor."""

from pathlib import Path

import httpx2
import numpy as np
import pytest

from shared.model import Predictor
from shared.testing import pattern_running
from shared.training import iris_dataset
from training_patterns.antipatterns.training_code_in_serving import train

PATTERN = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_trainer_exports_and_server_serves_the_same_model(tmp_path: Path) -> None:
    model_dir = str(tmp_path / "model")
    with pattern_running(
        PATTERN,
        TRAINING_CODE_IN_SERVING_TRAINER_OUT_DIR=model_dir,
        TRAINING_CODE_IN_SERVING_SERVER_MODEL_DIR=model_dir,
        TRAINING_CODE_IN_SERVING_TRAINER_TRIALS="2",
    ) as pattern:
        rows = iris_dataset().x[::25].tolist()
        response = httpx2.post(f"{pattern.url('server')}/predict", json={"data": rows}, timeout=10)

    assert response.status_code == 200, response.text
    served = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    expected = Predictor(model_dir).predict_proba(train.training_tensor(iris_dataset()).x[::25])
    assert np.array_equal(np.array(served, dtype=np.float32), expected)
