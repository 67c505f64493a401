"""The inference code training and serving share: preprocessing, the model, the prediction.

This module is the whole of what the two sides have in common. It imports numpy, and the shared
model runner (onnxruntime) where a model is loaded (the trainer's image, which only exports,
has no onnxruntime), and nothing of training: the trainer (train.py) fits on
`preprocess(rows)`, the server (server.py) predicts on `preprocess(rows)`, so the tensor the
model sees is the same on both sides by construction, not by two copies kept in step.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RAW_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
# What preprocess adds to the raw measurements: the model is trained on all six.
FEATURES = [*RAW_FEATURES, "sepal_area", "petal_area"]


def preprocess(rows: np.ndarray | list[list[float]]) -> np.ndarray:
    """Raw iris measurements (n x 4) to the model's tensor (n x 6, float32): the four as they
    are, then the sepal and petal areas. A product beyond float32's range is infinity, which the
    model turns into an unscorable row (422), never a wrong answer."""
    x = np.asarray(rows, dtype=np.float32).reshape(-1, len(RAW_FEATURES))
    with np.errstate(over="ignore"):
        areas = np.column_stack([x[:, 0] * x[:, 1], x[:, 2] * x[:, 3]])
    return np.ascontiguousarray(np.hstack([x, areas]), dtype=np.float32)


class InferenceModel:
    """The exported model behind the preprocessing: raw rows in, the contract's predictions out."""

    def __init__(
        self,
        model_dir: str | Path,
        preprocessing: Callable[[list[list[float]]], np.ndarray] = preprocess,
    ) -> None:
        from shared.model import Predictor

        self.predictor = Predictor(model_dir)
        self.card = self.predictor.card
        self.preprocessing = preprocessing

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """Per raw row, the label and the probability of every class."""
        # Predictor takes rows as lists: float32 values go back and forth unchanged.
        return self.predictor.predict(self.preprocessing(rows).tolist())
