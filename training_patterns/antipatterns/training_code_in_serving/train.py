"""The training job: read the rows, tune, fit and export the model the server serves.

    .venv/bin/python -m training_patterns.antipatterns.training_code_in_serving.train

Training-only: scikit-learn, skl2onnx and Optuna (the tuning library) are imported here, and
the warehouse's URL is read here; none of it reaches the server. What the two share is
inference.preprocess: the model is fitted on its tensor, and the server feeds it the same one.
"""

import logging
from pathlib import Path
from typing import Any

import optuna
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.logs import configure_logging
from shared.training import SEED, Dataset, export, iris_dataset

# preprocess is re-exported (`as preprocess`): the antipattern's server takes it from here.
from training_patterns.antipatterns.training_code_in_serving.inference import FEATURES
from training_patterns.antipatterns.training_code_in_serving.inference import (
    preprocess as preprocess,
)
from training_patterns.antipatterns.training_code_in_serving.settings import TrainerSettings

logger = logging.getLogger(__name__)


def read_rows(settings: TrainerSettings) -> Dataset:
    """The training rows. A real job would query settings.warehouse_url; here the bundled iris
    data stands in for the warehouse's table, and the URL is only the configuration that
    training holds and serving must not."""
    logger.info("reading rows (the bundled iris stands in for the warehouse)")
    return iris_dataset()


def training_tensor(raw: Dataset) -> Dataset:
    """The rows as the model sees them: inference.preprocess, as the server applies it."""
    return Dataset(preprocess(raw.x), raw.y, raw.labels, FEATURES)


def pipeline(regularization: float) -> Pipeline:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=regularization, max_iter=1000, random_state=SEED)
    )


def tune(data: Dataset, trials: int) -> float:
    """The regularization C that cross-validates best on the training split (Optuna, seeded:
    the same rows give the same C)."""
    # The split export() makes: tuning never sees its held-out rows.
    x_train, _, y_train, _ = train_test_split(
        data.x, data.y, test_size=0.25, random_state=SEED, stratify=data.y
    )

    def objective(trial: optuna.Trial) -> float:
        c = trial.suggest_float("C", 1e-3, 1e3, log=True)
        return float(cross_val_score(pipeline(c), x_train, y_train, cv=3).mean())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED))
    study.optimize(objective, n_trials=trials)
    best = float(study.best_params["C"])
    logger.info("tuned C=%.4g (cross-validated accuracy %.3f)", best, study.best_value)
    return best


def train(settings: TrainerSettings) -> dict[str, Any]:
    raw = read_rows(settings)
    data = training_tensor(raw)
    regularization = tune(data, settings.trials)
    return export(
        pipeline(regularization),
        data,
        "iris-areas",
        "1.0.0",
        Path(settings.out_dir),
        # The server takes raw rows: its sample is a raw row, preprocessed by the server.
        sample_input=[[round(float(v), 6) for v in raw.x[0]]],
        raw_features=list(raw.feature_names),
        regularization=round(regularization, 6),
    )


def main() -> None:
    settings = TrainerSettings()
    configure_logging("training-code-in-serving-trainer", settings.log_level)
    card = train(settings)
    logger.info("model %s %s exported to %s", card["name"], card["version"], settings.out_dir)


if __name__ == "__main__":
    main()
