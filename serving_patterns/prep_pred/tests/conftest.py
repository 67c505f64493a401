"""Fixtures of the prep-pred tests: one freshly trained digits pair per test session."""

from pathlib import Path

import pytest

from shared.training import train_digits


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """preprocess.json, model.onnx and model.json from one training run, in a private folder."""
    out = tmp_path_factory.mktemp("digits")
    train_digits(out)
    return out
