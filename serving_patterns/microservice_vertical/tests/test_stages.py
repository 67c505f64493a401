"""In-process tests of the stage servers: one model each, the specialist's input, the delay."""

import time
from pathlib import Path

import pytest

from serving_patterns.microservice_vertical.proxy import SEVEN, THREE
from serving_patterns.microservice_vertical.settings import CoarseSettings, LowSettings
from serving_patterns.microservice_vertical.stages import create_coarse, create_low
from shared.testing import ready_client

MODELS = Path(__file__).resolve().parents[3] / "models"


def test_coarse_stage_tells_the_half_of_the_digits() -> None:
    settings = CoarseSettings(model_dir=str(MODELS / "digits_coarse"))
    with ready_client(create_coarse(settings)) as client:
        response = client.post("/predict", json={"data": [THREE, SEVEN]})

    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == ["0-4", "5-9"]


def test_a_specialist_takes_the_image_and_the_coarse_probabilities_only() -> None:
    settings = LowSettings(model_dir=str(MODELS / "digits_low"))
    with ready_client(create_low(settings)) as client:
        image_alone = client.post("/predict", json={"data": [THREE]})
        with_coarse = client.post("/predict", json={"data": [[*THREE, 0.8, 0.2]]})

    assert image_alone.status_code == 422
    assert "expected 66 features" in image_alone.text
    assert "coarse_0-4, coarse_5-9" in image_alone.text
    assert with_coarse.status_code == 200
    assert with_coarse.json()["predictions"][0]["label"] == "3"


def test_a_stage_waits_its_injected_delay() -> None:
    settings = CoarseSettings(model_dir=str(MODELS / "digits_coarse"), delay_ms=300)
    with ready_client(create_coarse(settings)) as client:
        started = time.perf_counter()
        response = client.post("/predict", json={"data": [THREE]})
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_delay_setting_refuses_a_negative_value() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        CoarseSettings(delay_ms=-1)
