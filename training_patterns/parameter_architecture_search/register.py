"""The one-shot after the workers: the best trial's model, trained again on the whole training
split, evaluated on the held-out rows, exported to ONNX and registered in MLflow as a new
version with its evaluation and the trial's params; Optuna's charts of the study beside it.

    python -m training_patterns.parameter_architecture_search.register

What it records: an MLflow run `best-trial-<n>` with the trial's params, its cross-validated
score and its test accuracy, the charts (optimization_history.png, param_importances.png) and
the model; a version of the registered model (iris-search) tagged with the study, the trial,
the evaluation, the data version and the code version, and the alias `best` moved to it.
"""

import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # files, no display: before pyplot is imported (by Optuna's charts)

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from shared import tracking  # noqa: E402
from shared.logs import configure_logging  # noqa: E402
from shared.training import export, iris_dataset  # noqa: E402
from training_patterns.parameter_architecture_search import space  # noqa: E402
from training_patterns.parameter_architecture_search.search import (  # noqa: E402
    SCORE,
    STUDY_TAG,
    TRIAL_TAG,
    one_at_a_time,
    open_storage,
)
from training_patterns.parameter_architecture_search.settings import RegisterSettings  # noqa: E402

logger = logging.getLogger(__name__)

CHARTS = ("optimization_history.png", "param_importances.png")


@dataclass(frozen=True)
class Registered:
    run_id: str
    version: str
    trial: int
    params: dict[str, object]
    cv_accuracy: float
    test_accuracy: float
    charts: list[Path]


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The finished trial of the highest score (the first of equals); pruned ones never count."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name} has no finished trial: nothing to register")
    return study.best_trial


def draw_charts(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's own charts, as PNG files a person opens: the best score over the trials, and
    how much each parameter mattered (fANOVA, over the params every finished trial has)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # few trials per regime: said in README
        _save(optuna.visualization.matplotlib.plot_optimization_history(study), out_dir / CHARTS[0])
        _save(optuna.visualization.matplotlib.plot_param_importances(study), out_dir / CHARTS[1])
    return [out_dir / name for name in CHARTS]


def _save(axes: Axes, path: Path) -> None:
    figure = cast(Figure, axes.figure)  # Optuna draws each chart on a figure of its own
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def register_best(settings: RegisterSettings, client: MlflowClient) -> Registered:
    with one_at_a_time(settings.storage, settings.storage_schema):
        storage = open_storage(settings.storage, settings.storage_schema)
    study = optuna.load_study(study_name=settings.study, storage=storage)
    best = best_trial(study)
    params = dict(best.params)
    code_version = settings.code_version or tracking.code_version()
    dataset = iris_dataset()
    tags = {STUDY_TAG: settings.study, TRIAL_TAG: str(best.number)}
    with tracking.recorded_run(
        client, settings.experiment, run_name=f"best-trial-{best.number}", tags=tags
    ) as run:
        out_dir = Path(settings.out_dir)
        charts = draw_charts(study, out_dir / settings.study)
        tracking.log_run(client, run, params={**params, "seed": settings.seed})
        for chart in charts:
            tracking.log_run(client, run, artefacts=chart, artefact_path="charts")
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            model_dir = Path(scratch)
            # The same export as every model of these patterns: fit on the training split,
            # test accuracy on the held-out rows the search never saw, model.onnx + model.json.
            card = export(
                space.build(params, settings.seed), dataset, settings.model_name,
                "unregistered", model_dir, study=settings.study, trial=best.number,
                params=params, code_version=code_version,
            )  # fmt: skip
            cv_accuracy = float(best.value or 0.0)
            evaluation = {
                SCORE: cv_accuracy,
                "test_accuracy": float(card["metrics"]["test_accuracy"]),
            }
            tracking.log_run(client, run, metrics=evaluation)
            version = tracking.register_onnx_model(
                client, run, settings.model_name, model_dir, evaluation,
                data_version=tracking.data_version(dataset.x, dataset.y),
                code_version=code_version,
            )  # fmt: skip
        number = str(version.version)
        for key, value in {**tags, space.MODEL: str(params[space.MODEL])}.items():
            client.set_model_version_tag(settings.model_name, number, key, value)
        tracking.set_alias(client, settings.model_name, settings.alias, number)
    logger.info(
        "registered %s version %s: trial %d %s, %s %.4f, test accuracy %.4f",
        settings.model_name, number, best.number, params[space.MODEL], SCORE, cv_accuracy,
        evaluation["test_accuracy"],
    )  # fmt: skip
    return Registered(
        run.info.run_id, number, best.number, params, cv_accuracy,
        evaluation["test_accuracy"], charts,
    )  # fmt: skip


def main() -> int:
    settings = RegisterSettings()
    configure_logging("parameter-architecture-search-register", settings.log_level)
    try:
        register_best(settings, tracking.connect(settings.tracking_uri))
    except Exception:
        logger.exception("registering the best trial failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
