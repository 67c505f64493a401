"""The fix: a training run from the repository that records everything a re-run needs.

    .venv/bin/python -m training_patterns.antipatterns.only_me.recorded

One MLflow run (shared/tracking.py) and one registered model version. The run's parameters
are what `reproduce.py` needs and checks (RECORD):
- regularization and seed: every choice the fit makes (the seed orders the rows, so it picks
  the split, and seeds the solver);
- data_version: a hash of the training rows (features and labels, in order);
- code_sha256: a hash of the code that trains (this file and shared/training.py), and
  code_version, the git revision, for a person;
- requirements_sha256 and libraries: the pinned environment (the requirements file's hash) and
  the versions of the libraries that decide the model's bytes;
- the metric test_accuracy and the tag model_sha256, the hash of model.onnx.
"""

import hashlib
import importlib.metadata
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shared.training
from shared import tracking
from shared.logs import configure_logging
from shared.training import Dataset, export, iris_dataset
from training_patterns.antipatterns.only_me.settings import TrainerSettings

logger = logging.getLogger(__name__)

# What a run must record to be re-run and checked.
RECORD = [
    "regularization",
    "seed",
    "data_version",
    "code_sha256",
    "requirements_sha256",
    "libraries",
    "test_accuracy",
    "model_sha256",
]
# The libraries whose versions decide the model's bytes.
MODEL_LIBRARIES = ["numpy", "scipy", "scikit-learn", "skl2onnx", "onnx"]


@dataclass(frozen=True)
class Fitted:
    test_accuracy: float
    model_sha256: str
    card: dict[str, Any]


def rows(seed: int) -> Dataset:
    """The iris rows in the order the seed gives (the order decides the split)."""
    iris = iris_dataset()
    order = np.random.default_rng(seed).permutation(len(iris.y))
    return Dataset(iris.x[order], iris.y[order], iris.labels, iris.feature_names)


def fit(data: Dataset, regularization: float, seed: int, out_dir: Path) -> Fitted:
    """Fit, evaluate and export: the same inputs and libraries give the same bytes."""
    pipeline = make_pipeline(
        StandardScaler(), LogisticRegression(C=regularization, max_iter=1000, random_state=seed)
    )
    card = export(pipeline, data, "only-me-iris", "1.0.0", out_dir)
    return Fitted(float(card["metrics"]["test_accuracy"]), str(card["onnx_sha256"]), card)


def file_sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_sha256() -> str:
    """The code that trains: this module and the shared export it calls."""
    return file_sha256(Path(__file__), Path(shared.training.__file__))


def libraries() -> str:
    """name==version of each library that decides the model's bytes, as installed here."""
    return json.dumps({name: importlib.metadata.version(name) for name in MODEL_LIBRARIES})


def train_and_record(settings: TrainerSettings) -> tuple[str, str, Fitted]:
    """One recorded run: (run id, registered version, what was fitted)."""
    client = tracking.connect(settings.tracking_uri)
    data = rows(settings.seed)
    with tracking.recorded_run(client, settings.experiment) as run:
        with tempfile.TemporaryDirectory(dir=_mkdir(settings.work_dir)) as scratch:
            fitted = fit(data, settings.regularization, settings.seed, Path(scratch))
            data_version = tracking.data_version(data.x, data.y)
            code_version = settings.code_version or tracking.code_version()
            params = {
                "regularization": settings.regularization,
                "seed": settings.seed,
                "data_version": data_version,
                "code_sha256": code_sha256(),
                "code_version": code_version,
                "requirements_sha256": file_sha256(Path(settings.requirements)),
                "libraries": libraries(),
            }
            tracking.log_run(
                client,
                run,
                params=params,
                metrics={"test_accuracy": fitted.test_accuracy},
                tags={"model_sha256": fitted.model_sha256},
            )
            version = tracking.register_onnx_model(
                client,
                run,
                settings.model_name,
                Path(scratch),
                evaluation={"test_accuracy": fitted.test_accuracy},
                data_version=data_version,
                code_version=code_version,
            )
    logger.info(
        "run %s: version %s, test accuracy %.4f, model %s",
        run.info.run_id,
        version.version,
        fitted.test_accuracy,
        fitted.model_sha256[:12],
    )
    return run.info.run_id, str(version.version), fitted


def _mkdir(path: str) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    settings = TrainerSettings()
    configure_logging("only-me-trainer", settings.log_level)
    train_and_record(settings)


if __name__ == "__main__":
    main()
