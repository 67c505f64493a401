"""The prep side's model artefact: the fitted preprocessing, applied with numpy alone.

Training (shared.training.train_digits) fits the preprocessing and the classifier in one
pipeline, then writes the preprocessing as plain parameters to preprocess.json. Here they are
applied as PCA.transform applies them, so prep needs neither scikit-learn nor onnxruntime:

    features = ((pixels / pixel_max) - mean) @ components.T / scale
"""

import json
from pathlib import Path

import numpy as np

from serving_patterns.prep_pred.schemas import IMAGE_SIDE, PIXEL_MAX


class Preprocessor:
    """Raw 8x8 images to the feature rows the classifier was fitted on."""

    def __init__(self, path: str | Path) -> None:
        params = json.loads(Path(path).read_text())
        self.name: str = params["name"]
        self.version: str = params["version"]
        self.labels: list[str] = params["labels"]
        self.feature_names: list[str] = params["feature_names"]
        self.sample_input: list[list[list[int]]] = params["sample_input"]
        self.pixel_max = float(params["pixel_max"])
        self.mean = np.asarray(params["mean"], dtype=np.float64)
        self.components = np.asarray(params["components"], dtype=np.float64)
        self.scale = np.asarray(params["scale"], dtype=np.float64)
        # The API's schema promises 8x8 images of 0..16; an artefact fitted on anything else
        # would silently compute garbage, so it is refused at load.
        pixels = IMAGE_SIDE * IMAGE_SIDE
        if params["image_shape"] != [IMAGE_SIDE, IMAGE_SIDE] or self.pixel_max != PIXEL_MAX:
            raise ValueError(
                f"{path} was fitted on {params['image_shape']} images of 0..{params['pixel_max']}, "
                f"the API takes {IMAGE_SIDE}x{IMAGE_SIDE} images of 0..{PIXEL_MAX}"
            )
        n = len(self.feature_names)
        if self.mean.shape != (pixels,) or self.components.shape != (n, pixels):
            raise ValueError(f"{path}: mean or components do not fit {pixels} pixels, {n} features")
        if self.scale.shape != (n,) or not np.all(self.scale > 0):
            raise ValueError(f"{path}: scale must hold {n} positive numbers")

    def transform(self, images: list[list[list[int]]]) -> np.ndarray:
        """One row of features per image: flatten, scale to 0..1, project, whiten."""
        pixels = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        projected = (pixels / self.pixel_max - self.mean) @ self.components.T
        features: np.ndarray = projected / self.scale
        return features
