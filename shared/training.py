"""Train small scikit-learn models on bundled datasets and export them to ONNX.

Training-only: build stages and training jobs import this, serving code never does. Training is
deterministic (fixed seeds, fixed split), so the same library versions give the same model bytes.

    python -m shared.training iris --out models/iris
    python -m shared.training digits --out models/digits   # preprocess.json + model.onnx
    python -m shared.training iris_forest --out models/iris_forest   # any name of REGISTRY
    python -m shared.training ensure          # every registered model missing under models/
"""

import argparse
import functools
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
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

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
    pipeline: Pipeline,
    data: Dataset,
    name: str,
    version: str,
    out_dir: Path,
    augment: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    **card: Any,
) -> dict[str, Any]:
    """Fit, evaluate on a held-out split, and write model.onnx plus its card model.json.

    augment, if given, grows the training split only: the held-out rows stay unseen."""
    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=0.25, random_state=SEED, stratify=data.y
    )
    if augment is not None:
        x_train, y_train = augment(x_train, y_train)
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


# Three different learners on iris, for the horizontal pattern: independent models of one input
# whose answers the proxy aggregates (each small: all three train in about a second).
def train_iris_forest(out_dir: Path) -> dict[str, Any]:
    forest = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=SEED)
    return export(make_pipeline(forest), iris_dataset(), "iris-forest", "1.0.0", out_dir)


def train_iris_svm(out_dir: Path) -> dict[str, Any]:
    # Calibrated on held-out folds: an SVM's own scores are no probabilities to average.
    svm = CalibratedClassifierCV(SVC(kernel="rbf"), ensemble=False)
    return export(
        make_pipeline(StandardScaler(), svm), iris_dataset(), "iris-svm", "1.0.0", out_dir
    )


def train_iris_mlp(out_dir: Path) -> dict[str, Any]:
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=SEED)
    return export(
        make_pipeline(StandardScaler(), mlp), iris_dataset(), "iris-mlp", "1.0.0", out_dir
    )


# The digits cascade, for the vertical pattern: a coarse model says which half of the digits an
# 8x8 image shows (0-4 or 5-9), and a specialist for that half names the digit. A specialist
# takes the coarse model's output as input too: its rows are the 64 pixels followed by the
# coarse probabilities, in COARSE_LABELS order (the proxy builds them the same way).
COARSE_LABELS = ["0-4", "5-9"]
PIXELS = [f"pixel_{i}" for i in range(64)]


def digits_pixels() -> Dataset:
    """Raw 8x8 images flattened to 64 intensities 0..16, labelled with their digit."""
    bunch = load_digits()
    labels = [str(label) for label in bunch.target_names]
    return Dataset(bunch.data.astype(np.float32), bunch.target, labels, PIXELS)


def _coarse_pipeline() -> Pipeline:
    # A small forest: 98% right on the halves where a linear model is 89%, in a tenth of a second.
    return make_pipeline(RandomForestClassifier(n_estimators=30, max_depth=8, random_state=SEED))


def train_digits_coarse(out_dir: Path) -> dict[str, Any]:
    digits = digits_pixels()
    halves = Dataset(digits.x, (digits.y >= 5).astype(int), COARSE_LABELS, PIXELS)
    return export(_coarse_pipeline(), halves, "digits-coarse", "1.0.0", out_dir)


@functools.cache
def _coarse_probabilities() -> np.ndarray:
    """Each image's coarse probabilities from a model that never saw it (5-fold): a specialist
    trained on the coarse model's answers to its own training rows would trust them too much."""
    digits = digits_pixels()
    proba: np.ndarray = cross_val_predict(
        _coarse_pipeline(), digits.x, digits.y >= 5, cv=5, method="predict_proba"
    )
    return proba.astype(np.float32)


def _train_digits_specialist(out_dir: Path, half: str, digits_of_half: range) -> dict[str, Any]:
    digits = digits_pixels()
    mine = np.isin(digits.y, digits_of_half)
    stacked = Dataset(
        np.hstack([digits.x, _coarse_probabilities()])[mine],
        digits.y[mine] - digits_of_half.start,
        [str(d) for d in digits_of_half],
        [*PIXELS, *(f"coarse_{label}" for label in COARSE_LABELS)],
    )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    return export(pipeline, stacked, f"digits-{half}", "1.0.0", out_dir, input_from="digits-coarse")


def train_digits_low(out_dir: Path) -> dict[str, Any]:
    return _train_digits_specialist(out_dir, "low", range(5))


def train_digits_high(out_dir: Path) -> dict[str, Any]:
    return _train_digits_specialist(out_dir, "high", range(5, 10))


# Two models of one input for the online-bigsize antipattern: a big slow one and a small fast
# one that answer the same API. The big one is a nearest-neighbour classifier over the training
# images and their copies shifted by up to SHIFT pixels each way: it trains in no time, is as big
# as its reference set, and each prediction measures its distance to every reference. The copies
# make it no more accurate here (98.4 % with or without them), only as big as it takes to miss
# the antipattern's SLO at its target rate. The small one is a linear model.
SHIFT = 2


def shifted_copies(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 8x8 image moved by every (dy, dx) within SHIFT pixels, the edge filled with 0."""
    images = x.reshape(-1, 8, 8)
    copies = []
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            moved = np.zeros_like(images)
            moved[:, max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)] = images[
                :, max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)
            ]
            copies.append(moved.reshape(len(x), 64))
    return np.vstack(copies), np.tile(y, len(copies))


def train_digits_knn(out_dir: Path) -> dict[str, Any]:
    knn = KNeighborsClassifier(n_neighbors=3)
    return export(
        make_pipeline(knn),
        digits_pixels(),
        "digits-knn",
        "1.0.0",
        out_dir,
        # skl2onnx's default k-NN graph walks the references in a loop, so a call costs about
        # the size of the reference set (0.1 to 0.3 s here); options={"kneighborsclassifier__
        # optim": "cdist"} would be a hundred times faster: a fix the README names.
        augment=shifted_copies,
        references=f"the training images and their {(2 * SHIFT + 1) ** 2 - 1} shifted copies",
    )


def train_digits_linear(out_dir: Path) -> dict[str, Any]:
    linear = LogisticRegression(max_iter=2000, random_state=SEED)
    return export(
        make_pipeline(StandardScaler(), linear), digits_pixels(), "digits-linear", "1.0.0", out_dir
    )


# name -> trainer writing model.onnx and model.json into the directory it is given.
REGISTRY: dict[str, Callable[[Path], dict[str, Any]]] = {
    "iris": train_iris,
    "digits": train_digits,
    "iris_forest": train_iris_forest,
    "iris_svm": train_iris_svm,
    "iris_mlp": train_iris_mlp,
    "digits_coarse": train_digits_coarse,
    "digits_low": train_digits_low,
    "digits_high": train_digits_high,
    "digits_knn": train_digits_knn,
    "digits_linear": train_digits_linear,
}


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
