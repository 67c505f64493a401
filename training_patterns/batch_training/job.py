"""The batch training job: one run gathers, validates, preprocesses, trains, evaluates, exports
ONNX and records the result in the model repository (MLflow), then exits.

    python -m training_patterns.batch_training.job        # the scheduler starts exactly this

What a run records (shared/tracking.py does the MLflow calls):
- a run in the experiment, with its params, the row counts (gathered, valid, invalid by reason),
  the test accuracy, the rejected rows (invalid_rows.json) and the model's artefacts;
- a new version of the registered model, tagged with its evaluation, the data version (a hash of
  the training rows) and the code version (git revision);
- the gate: a version whose accuracy reaches MIN_ACCURACY gets the serving alias (champion),
  one below it stays registered without it, and the alias stays where it was.
A step that raises leaves a FAILED run naming the step and the error, and the job exits 1: the
next run (the scheduler's next tick, or this command by hand) starts afresh.
"""

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shared import tracking
from shared.logs import configure_logging
from shared.training import SEED, Dataset, export, iris_dataset
from training_patterns.batch_training import data
from training_patterns.batch_training.settings import TrainerSettings

logger = logging.getLogger(__name__)

STEPS = ["gather", "validate", "preprocess", "train", "register", "gate"]
FAILED_STEP_TAG = "failed_step"


@contextmanager
def step(client: MlflowClient, run: Run, name: str) -> Iterator[None]:
    """One step of the run: a step that raises is named on the run (failed_step)."""
    logger.info("step %s", name)
    try:
        yield
    except BaseException:
        client.set_tag(run.info.run_id, FAILED_STEP_TAG, name)
        raise


def gather(settings: TrainerSettings) -> list[data.Row]:
    """(1) The rows, as the source has them."""
    if settings.source:
        return data.read_csv(Path(settings.source))
    return data.bundled_rows(settings.bad_every)


def preprocess(valid: data.Validated) -> Dataset:
    """(2) Numbers to arrays, in a fixed order: the same rows give the same data version.

    The scaling is part of the model (a StandardScaler fitted in train), so the server applies
    the same preprocessing as training without code of its own."""
    iris = iris_dataset()
    order = np.lexsort(np.column_stack([valid.features, valid.labels]).T[::-1])
    x = np.asarray(valid.features, dtype=np.float32)[order]
    y = np.asarray(valid.labels, dtype=np.int64)[order]
    return Dataset(x, y, iris.labels, iris.feature_names)


def run_job(settings: TrainerSettings, client: MlflowClient) -> tracking.Gated:
    code_version = settings.code_version or tracking.code_version()
    tags = {tracking.CODE_VERSION_TAG: code_version}
    with tracking.recorded_run(client, settings.experiment, tags=tags) as run:
        logger.info("run %s started", run.info.run_id)
        params = {
            "model": "StandardScaler+LogisticRegression",
            "regularization": settings.regularization,
            "max_iter": settings.max_iter,
            "seed": SEED,
            "source": settings.source or f"bundled iris, bad row every {settings.bad_every}",
            "min_accuracy": settings.min_accuracy,
        }
        tracking.log_run(client, run, params=params)

        with step(client, run, "gather"):
            rows = gather(settings)
        with step(client, run, "validate"):
            valid = data.validate(rows, iris_dataset().labels)
            counts = {
                "rows_gathered": len(rows),
                "rows_valid": len(valid.labels),
                "rows_invalid": len(valid.rejected),
            }
            logger.info("validated: %s, invalid by reason %s", counts, dict(valid.reasons))
            tracking.log_run(client, run, metrics=counts)
            if valid.rejected:
                client.log_text(
                    run.info.run_id, json.dumps(valid.rejected, indent=1), "invalid_rows.json"
                )
            if len(valid.labels) < settings.min_valid_fraction * max(len(rows), 1):
                raise ValueError(
                    f"only {len(valid.labels)} of {len(rows)} rows are valid, fewer than "
                    f"{settings.min_valid_fraction:.0%}: {dict(valid.reasons)}"
                )
        with step(client, run, "preprocess"):
            dataset = preprocess(valid)
            data_version = tracking.data_version(dataset.x, dataset.y)
            tracking.log_run(client, run, tags={tracking.DATA_VERSION_TAG: data_version})

        model_dir = Path(tempfile.mkdtemp(dir=_work_dir(settings)))
        with step(client, run, "train"):
            # (3-5) fit, evaluate on a held-out split, export ONNX with its card: the export every
            # model of these patterns goes through, so the model servers serve it as it is.
            pipeline = make_pipeline(
                StandardScaler(),
                LogisticRegression(
                    C=settings.regularization, max_iter=settings.max_iter, random_state=SEED
                ),
            )
            card = export(
                pipeline, dataset, settings.model_name, "unregistered", model_dir,
                data_version=data_version, code_version=code_version,
            )  # fmt: skip
            evaluation = {k: float(v) for k, v in card["metrics"].items()}
            tracking.log_run(client, run, metrics=evaluation)
        with step(client, run, "register"):
            # (6) the model repository: a new version, with its evaluation and versions.
            version = tracking.register_onnx_model(
                client, run, settings.model_name, model_dir, evaluation,
                data_version=data_version, code_version=code_version,
            )  # fmt: skip
            shutil.rmtree(model_dir)  # the repository has it now

        with step(client, run, "gate"):
            accuracy = evaluation["test_accuracy"]
            gated = tracking.gate(
                client, run, version, accuracy, settings.min_accuracy, settings.serving_alias
            )
    return gated


def _work_dir(settings: TrainerSettings) -> Path:
    path = Path(settings.work_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> int:
    settings = TrainerSettings()
    configure_logging("batch-training-trainer", settings.log_level)
    client = tracking.connect(settings.tracking_uri)
    try:
        outcome = run_job(settings, client)
    except Exception:
        logger.exception("the run failed: it is recorded as FAILED; run the job again to re-kick")
        return 1
    logger.info(
        "run %s done: version %s, test accuracy %.4f%s",
        outcome.run_id, outcome.version, outcome.test_accuracy,
        ", promoted" if outcome.promoted else ", not promoted",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
