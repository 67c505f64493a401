"""Train small scikit-learn models on bundled datasets and export them to ONNX.

Training-only: build stages and training jobs import this, serving code never does. Training is
deterministic (fixed seeds, fixed split), so the same library versions give the same model bytes.

    python -m shared.training iris --out models/iris
    python -m shared.training digits --out models/digits   # preprocess.json + model.onnx
    python -m shared.training ensure          # every registered model missing under models/
"""

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

SEED = 42
MODELS_ROOT = Path("models")


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    feature_names: list[str]


def iris_dataset() -> Dataset:
    bunch = load_iris()
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in bunch.feature_names]
    return Dataset(bunch.data.astype(np.float32), bunch.target, list(bunch.target_names), names)


def export(
    pipeline: Pipeline, data: Dataset, name: str, version: str, out_dir: Path, **card: Any
) -> dict[str, Any]:
    """Fit, evaluate on a held-out split, and write model.onnx plus its card model.json."""
    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=0.25, random_state=SEED, stratify=data.y
    )
    pipeline.fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))
    # zipmap=False: probabilities come back as one float tensor, not a list of dicts.
    onx = to_onnx(pipeline, x_train[:1], options={"zipmap": False}, target_opset=17)
    model_bytes = onx.SerializeToString()
    card = {
        "name": name,
        "version": version,
        "labels": data.labels,
        "feature_names": data.feature_names,
        "sample_input": [[round(float(v), 6) for v in data.x[0]]],
        "metrics": {"test_accuracy": round(accuracy, 4)},
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        **card,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # model.json last: `ensure` takes its presence to mean the whole set is there.
    _write_atomically(out_dir / "model.onnx", model_bytes)
    _write_atomically(out_dir / "model.json", (json.dumps(card, indent=2) + "\n").encode())
    logger.info("exported %s %s to %s (test accuracy %.3f)", name, version, out_dir, accuracy)
    return card


def train_iris(out_dir: Path) -> dict[str, Any]:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    return export(pipeline, iris_dataset(), "iris", "1.0.0", out_dir)


def _write_atomically(path: Path, data: bytes) -> None:
    # Parallel test runs may train the same model at once; a reader never sees half a file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def train_digits(out_dir: Path) -> dict[str, Any]:
    """The prep-pred pair: preprocessing and classifier fitted in one run, exported apart.

    Raw input is an 8x8 grid of pixel intensities 0..16. The preprocessing (flatten, scale to
    0..1, PCA whitened to 24 components) is fitted in the same pipeline as the classifier, then
    written as plain parameters (preprocess.json, applied with numpy by the prep service) while the
    classifier alone goes to model.onnx (served by onnxruntime in the pred service). Both carry
    the same version; model.json also records the hash of the preprocess.json it was fitted with.
    """
    version = "1.0.0"
    bunch = load_digits()
    images = bunch.images.astype(np.float64)  # (n, 8, 8), intensities 0..16
    pixel_max = 16.0
    x = images.reshape(len(images), -1) / pixel_max
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=0.25, random_state=SEED, stratify=bunch.target
    )
    pipeline = Pipeline(
        [
            ("pca", PCA(n_components=24, whiten=True, random_state=SEED)),
            ("classifier", LogisticRegression(max_iter=2000, random_state=SEED)),
        ]
    ).fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))
    pca: PCA = pipeline.named_steps["pca"]
    labels = [str(label) for label in bunch.target_names]
    feature_names = [f"pc_{i + 1}" for i in range(pca.n_components_)]

    # features = ((pixels / pixel_max) - mean) @ components.T / scale, as PCA.transform does.
    preprocess = {
        "name": "digits",
        "version": version,
        "image_shape": list(images.shape[1:]),
        "pixel_max": pixel_max,
        "mean": pca.mean_.tolist(),
        "components": pca.components_.tolist(),
        "scale": np.sqrt(pca.explained_variance_).tolist(),
        "feature_names": feature_names,
        "labels": labels,
        "sample_input": [images[0].astype(int).tolist()],
    }
    preprocess_bytes = (json.dumps(preprocess) + "\n").encode()

    features_train = pca.transform(x_train).astype(np.float32)
    onx = to_onnx(
        pipeline.named_steps["classifier"],
        features_train[:1],
        options={"zipmap": False},
        target_opset=17,
    )
    model_bytes = onx.SerializeToString()
    card = {
        "name": "digits",
        "version": version,
        "labels": labels,
        "feature_names": feature_names,
        "sample_input": [[round(float(v), 6) for v in pca.transform(x[:1])[0]]],
        "metrics": {"test_accuracy": round(accuracy, 4)},
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "preprocess_sha256": hashlib.sha256(preprocess_bytes).hexdigest(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # model.json last: `ensure` takes its presence to mean the whole set is there.
    _write_atomically(out_dir / "preprocess.json", preprocess_bytes)
    _write_atomically(out_dir / "model.onnx", model_bytes)
    _write_atomically(out_dir / "model.json", (json.dumps(card, indent=2) + "\n").encode())
    logger.info("exported digits %s to %s (test accuracy %.3f)", version, out_dir, accuracy)
    return card


# name -> trainer writing model.onnx and model.json into the directory it is given.
REGISTRY: dict[str, Callable[[Path], dict[str, Any]]] = {"iris": train_iris, "digits": train_digits}


def ensure(root: Path = MODELS_ROOT) -> None:
    """Train every registered model whose artefacts are missing: local mode's image build."""
    for name, train in REGISTRY.items():
        if not (root / name / "model.json").exists():
            train(root / name)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=[*REGISTRY, "ensure"])
    parser.add_argument("--out", type=Path, help="output directory (default models/<model>)")
    args = parser.parse_args()
    if args.model == "ensure":
        ensure(args.out or MODELS_ROOT)
    else:
        REGISTRY[args.model](args.out or MODELS_ROOT / args.model)


if __name__ == "__main__":
    main()
