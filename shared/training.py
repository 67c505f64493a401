"""Train small scikit-learn models on bundled datasets and export them to ONNX.

Training-only: build stages and training jobs import this, serving code never does. Training is
deterministic (fixed seeds, fixed split), so the same library versions give the same model bytes.

    python -m shared.training iris --out models/iris
    python -m shared.training ensure          # every registered model missing under models/
"""

import argparse
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(model_bytes)
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
    (out_dir / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    logger.info("exported %s %s to %s (test accuracy %.3f)", name, version, out_dir, accuracy)
    return card


def train_iris(out_dir: Path) -> dict[str, Any]:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    return export(pipeline, iris_dataset(), "iris", "1.0.0", out_dir)


# name -> trainer writing model.onnx and model.json into the directory it is given.
REGISTRY: dict[str, Callable[[Path], dict[str, Any]]] = {"iris": train_iris}


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
