"""In process: one inference module, the same tensors and answers in training and serving, and
the antipattern's baggage (training libraries, warehouse credentials) where serving runs."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from shared.model import Predictor
from shared.testing import wait_until
from shared.training import iris_dataset
from tests.test_dependencies import TRAINING_LIBRARIES
from training_patterns.antipatterns.training_code_in_serving import inference, server, train
from training_patterns.antipatterns.training_code_in_serving.settings import (
    BadServerSettings,
    ServerSettings,
    TrainerSettings,
)

PATTERN = Path(__file__).resolve().parents[1]
PACKAGE = "training_patterns.antipatterns.training_code_in_serving"
ROWS = iris_dataset().x[::10].tolist()  # 15 raw rows, every class


def served_tensors(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, np.ndarray]:
    """The server's answer to ROWS, and the tensor that reached the model."""
    seen: list[np.ndarray] = []
    original = Predictor.predict

    def spy(self: Predictor, rows: list[list[float]]) -> list[dict[str, Any]]:
        seen.append(np.asarray(rows, dtype=np.float32))
        return original(self, rows)

    monkeypatch.setattr(Predictor, "predict", spy)
    with TestClient(server.create_app(ServerSettings(model_dir=str(model_dir)))) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, timeout=10, what="ready")
        response = client.post("/predict", json={"data": ROWS})
    assert response.status_code == 200, response.text
    return response.json(), seen[0]


def test_training_and_serving_preprocessing_give_identical_tensors(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained_on = train.training_tensor(iris_dataset()).x[::10]

    _, served = served_tensors(model_dir, monkeypatch)

    assert served.dtype == trained_on.dtype == np.float32
    assert served.shape == (len(ROWS), len(inference.FEATURES))
    assert np.array_equal(served, trained_on)


def test_served_answers_are_the_trained_models_on_the_training_tensor(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = Predictor(model_dir).predict_proba(train.training_tensor(iris_dataset()).x[::10])

    answer, _ = served_tensors(model_dir, monkeypatch)

    served = np.array([list(p["probabilities"].values()) for p in answer["predictions"]])
    assert np.array_equal(served, expected)
    assert [p["label"] for p in answer["predictions"]] == [
        iris_dataset().labels[i] for i in expected.argmax(axis=1)
    ]


def test_predict_rejects_rows_of_model_features_not_raw_ones(model_dir: Path) -> None:
    with TestClient(server.create_app(ServerSettings(model_dir=str(model_dir)))) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, timeout=10, what="ready")
        response = client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2, 17.85, 0.28]]})
        metadata = client.get("/metadata").json()

    assert response.status_code == 422
    assert "expected 4 features" in response.text
    assert metadata["feature_names"] == inference.RAW_FEATURES
    assert metadata["extra"]["model_features"] == inference.FEATURES


def test_preprocess_overflow_is_unscorable_not_a_wrong_answer(model_dir: Path) -> None:
    with TestClient(server.create_app(ServerSettings(model_dir=str(model_dir)))) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, timeout=10, what="ready")
        response = client.post("/predict", json={"data": [[3e38, 3e38, 1.0, 1.0]]})

    assert response.status_code == 422, response.text


def modules_loaded_by(module: str) -> list[str]:
    """The training libraries in sys.modules once `module` is imported and its app built, in a
    fresh interpreter of this (the developer's) environment, where every library is installed."""
    script = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r}).create_app()\n"
        f"print(json.dumps([m for m in {TRAINING_LIBRARIES!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_server_imports_no_training_library_even_where_installed() -> None:
    assert modules_loaded_by(f"{PACKAGE}.server") == []


def test_bad_server_drags_the_training_libraries_into_serving() -> None:
    loaded = modules_loaded_by(f"{PACKAGE}.bad_server")

    assert {"sklearn", "skl2onnx", "optuna"} <= set(loaded)


def test_server_has_no_warehouse_configuration_and_the_bad_server_holds_its_credentials() -> None:
    served = yaml.safe_load((PATTERN / "compose.yaml").read_text())["services"]["server"]

    assert not any(
        "warehouse" in name or "password" in name for name in ServerSettings.model_fields
    )
    assert not any("WAREHOUSE" in name for name in served["environment"])
    assert "dwh" not in json.dumps(served)
    # The antipattern: the serving process holds the warehouse's URL, password included.
    bad = BadServerSettings().warehouse_url.get_secret_value()
    assert bad == TrainerSettings().warehouse_url.get_secret_value()
    assert "analyst-password@dwh.internal" in bad


def test_server_image_copies_no_training_code() -> None:
    dockerfile = (PATTERN / "Dockerfile").read_text()
    server_stage = dockerfile.split(" AS server")[1]

    assert "requirements/serving.txt" in dockerfile
    assert "/opt/serving /opt/serving" in server_stage
    assert "train.py" not in server_stage and "bad_server.py" not in server_stage
