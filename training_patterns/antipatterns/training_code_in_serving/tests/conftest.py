"""A model trained once per test session by the real trainer (two tuning trials: seconds)."""

from pathlib import Path

import pytest

from training_patterns.antipatterns.training_code_in_serving.settings import TrainerSettings
from training_patterns.antipatterns.training_code_in_serving.train import train


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train(TrainerSettings(trials=2, out_dir=str(out)))
    return out
