"""In-process tests of the model servers: three learners on one input, and the injected delay."""

import time
from pathlib import Path

import pytest

from serving_patterns.microservice_horizontal.models import create_forest, create_mlp, create_svm
from serving_patterns.microservice_horizontal.settings import (
    ForestSettings,
    MlpSettings,
    SvmSettings,
)
from shared.testing import ready_client

MODELS = Path(__file__).resolve().parents[3] / "models"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def test_each_model_server_serves_its_own_model_of_the_same_input() -> None:
    servers = [
        create_forest(ForestSettings(model_dir=str(MODELS / "iris_forest"))),
        create_svm(SvmSettings(model_dir=str(MODELS / "iris_svm"))),
        create_mlp(MlpSettings(model_dir=str(MODELS / "iris_mlp"))),
    ]
    names, labels = [], []
    for app in servers:
        with ready_client(app) as client:
            names.append(client.get("/metadata").json()["model_name"])
            answer = client.post("/predict", json={"data": [SETOSA, VIRGINICA]}).json()
            labels.append([p["label"] for p in answer["predictions"]])

    assert names == ["iris-forest", "iris-svm", "iris-mlp"]
    assert labels == [["setosa", "virginica"]] * 3


def test_a_model_server_waits_its_injected_delay() -> None:
    settings = SvmSettings(model_dir=str(MODELS / "iris_svm"), delay_ms=300)
    with ready_client(create_svm(settings)) as client:
        started = time.perf_counter()
        response = client.post("/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_delay_setting_refuses_a_negative_value() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        MlpSettings(delay_ms=-1)
