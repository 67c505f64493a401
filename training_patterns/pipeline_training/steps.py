"""The pipeline's steps, each a function from its input artefact to its output artefact.

The flows (refresh_flow.py, training_flow.py) call one of these per Metaflow step, and Metaflow
persists what each returns in its datastore, where the next step, or a later run, reads it.
A step can also run alone, on artefacts that exist already:

    python -m training_patterns.pipeline_training.steps evaluate --version 1   # re-evaluate

evaluates a registered model version (MLflow) on the held-out rows of the latest data refresh,
records the result on the version, and trains nothing.

The steps: gather (the rows as the source has them), validate (bad rows filtered and counted by
reason, batch training's checks), preprocess (arrays and their hash, the data version), train
(fit and export ONNX with its card), evaluate (the exported model.onnx, on rows it was not
trained on), register (a run and a model version in MLflow, and the gate).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.logs import configure_logging
from training_patterns.pipeline_training.settings import PipelineSettings, metaflow_environment

# Each step is a process of its own: it imports what it uses, in the function (scikit-learn in
# the data and training steps, onnx in evaluate, MLflow in register), and no more.
if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient

    from shared.tracking import Gated
    from shared.training import Dataset
    from training_patterns.batch_training import data

logger = logging.getLogger(__name__)

REFRESH_FLOW = "DataRefreshFlow"
TEST_SIZE = 0.25  # shared.training.export's held-out share: evaluate holds out the same rows
MODEL_FILES = ("model.onnx", "model.json")
REEVALUATED_TAG = "reevaluated"  # on a version: its accuracy on the data version named


class InjectedFailure(RuntimeError):
    """The step PIPELINE_TRAINING_PIPELINE_FAIL_AT names fails: a drill of failure and resume."""


def begin(settings: PipelineSettings, name: str) -> dict[str, Any]:
    """What every step records about itself (when and in which process it ran: a step cloned
    by a resume keeps the original's), and the injected failure."""
    logger.info("step %s", name)
    if settings.fail_at == name:
        raise InjectedFailure(f"step {name} fails: PIPELINE_TRAINING_PIPELINE_FAIL_AT={name}")
    return {"step": name, "at": time.time(), "pid": os.getpid()}


# --- the data refresh ----------------------------------------------------------------------------


def gather(settings: PipelineSettings) -> "list[data.Row]":
    """(1) The rows, as the source has them: a CSV export, or the bundled iris, corrupted."""
    from training_patterns.batch_training import data

    if settings.source:
        return data.read_csv(Path(settings.source))
    return data.bundled_rows(settings.bad_every)


def validate(rows: "list[data.Row]", settings: PipelineSettings) -> "data.Validated":
    """(2) The rows that parse and are in range; the others counted by reason, not a crash."""
    from shared.training import iris_dataset
    from training_patterns.batch_training import data

    valid = data.validate(rows, iris_dataset().labels)
    logger.info(
        "validated: %d of %d rows valid, invalid by reason %s",
        len(valid.labels), len(rows), dict(valid.reasons),
    )  # fmt: skip
    if len(valid.labels) < settings.min_valid_fraction * max(len(rows), 1):
        raise ValueError(
            f"only {len(valid.labels)} of {len(rows)} rows are valid, fewer than "
            f"{settings.min_valid_fraction:.0%}: {dict(valid.reasons)}"
        )
    return valid


def counts(rows: "list[data.Row]", valid: "data.Validated") -> dict[str, int]:
    return {
        "rows_gathered": len(rows),
        "rows_valid": len(valid.labels),
        "rows_invalid": len(valid.rejected),
    }


def preprocess(valid: "data.Validated") -> "tuple[Dataset, str]":
    """(3) Sorted arrays (batch training's preprocess) and their hash, the data version."""
    from shared import tracking
    from training_patterns.batch_training.job import preprocess as to_arrays

    dataset = to_arrays(valid)
    return dataset, tracking.data_version(dataset.x, dataset.y)


# --- the training --------------------------------------------------------------------------------


def train(dataset: "Dataset", data_version: str, settings: PipelineSettings) -> dict[str, bytes]:
    """(4) Fit a scaler and a logistic regression, export ONNX and its card: the model files.
    register adds the code version to the card (it asks git, and MLflow is imported there)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shared.training import SEED, export

    pipeline = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=settings.regularization, max_iter=settings.max_iter, random_state=SEED
        ),
    )
    with tempfile.TemporaryDirectory() as scratch:
        export(
            pipeline, dataset, settings.model_name, "unregistered", Path(scratch),
            data_version=data_version,
        )  # fmt: skip
        return {name: (Path(scratch) / name).read_bytes() for name in MODEL_FILES}


def held_out(dataset: "Dataset") -> "tuple[np.ndarray, np.ndarray]":
    """The rows training did not see: export's split, same seed, same share."""
    from sklearn.model_selection import train_test_split

    from shared.training import SEED

    _, x_test, _, y_test = train_test_split(
        dataset.x, dataset.y, test_size=TEST_SIZE, random_state=SEED, stratify=dataset.y
    )
    return x_test, y_test


def evaluate(model: dict[str, bytes], dataset: "Dataset") -> dict[str, float]:
    """(5) The exported model itself, model.onnx, on the held-out rows. onnx's reference
    evaluator runs it (the model servers run the same graph with onnxruntime, which the training
    image does without): the accuracy of the file that is registered and served."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    x_test, y_test = held_out(dataset)
    graph = ReferenceEvaluator(onnx.load_model_from_string(model["model.onnx"]))
    (labels,) = graph.run(["label"], {graph.input_names[0]: x_test.astype(np.float32)})
    return {
        "test_accuracy": round(float(np.mean(labels == y_test)), 4),
        "test_rows": float(len(y_test)),
    }


def register(
    client: "MlflowClient",
    settings: PipelineSettings,
    model: dict[str, bytes],
    evaluation: dict[str, float],
    data_run: str,
    refresh: dict[str, Any],
    pipeline_run: str,
) -> "Gated":
    """(6) The model repository: a run with the pipeline's record, a new model version tagged
    with its evaluation, data version and code version; the gate moves the serving alias.
    refresh: what the data run data_run stored (its data_version, counts and rejected rows)."""
    from shared import tracking

    code_version = settings.code_version or tracking.code_version()
    data_version, rejected = str(refresh["data_version"]), refresh["rejected"]
    tags = {tracking.CODE_VERSION_TAG: code_version, "pipeline_run": pipeline_run}
    with tracking.recorded_run(client, settings.experiment, tags=tags) as run:
        params = {
            "model": "StandardScaler+LogisticRegression",
            "regularization": settings.regularization,
            "max_iter": settings.max_iter,
            "data_run": data_run,
            "min_accuracy": settings.min_accuracy,
        }
        metrics = {**refresh["counts"], **evaluation}
        tracking.log_run(
            client, run, params=params, metrics=metrics,
            tags={tracking.DATA_VERSION_TAG: data_version},
        )  # fmt: skip
        if rejected:
            client.log_text(run.info.run_id, json.dumps(rejected, indent=1), "invalid_rows.json")
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = Path(scratch)
            for name, content in model.items():
                (model_dir / name).write_bytes(content)
            card = json.loads(model["model.json"])
            card["code_version"] = code_version
            (model_dir / "model.json").write_text(json.dumps(card, indent=2) + "\n")
            version = tracking.register_onnx_model(
                client, run, settings.model_name, model_dir, evaluation,
                data_version=data_version, code_version=code_version,
            )  # fmt: skip
        accuracy = evaluation["test_accuracy"]
        gated = tracking.gate(
            client, run, version, accuracy, settings.min_accuracy, settings.serving_alias
        )
    return gated


# --- the runs' artefacts, read back -------------------------------------------------------------


def data_run(pathspec: str = "latest") -> str:
    """The data refresh run to read: the latest successful one, or DataRefreshFlow/<run id>."""
    metaflow_environment()
    from metaflow.client.core import Flow, Run, namespace

    namespace(None)  # every user's runs: the scheduler's and a person's alike
    if pathspec != "latest":
        run = Run(pathspec if "/" in pathspec else f"{REFRESH_FLOW}/{pathspec}")
        if not run.successful:
            raise LookupError(f"{run.pathspec} did not finish: resume it, or refresh again")
        return str(run.pathspec)
    latest = Flow(REFRESH_FLOW).latest_successful_run  # type: ignore[no-untyped-call]
    if latest is None:
        raise LookupError(f"no successful {REFRESH_FLOW} run yet: run the data refresh first")
    return str(latest.pathspec)


def refresh_output(pathspec: str, name: str) -> Any:
    """One artefact the data refresh stored (dataset, data_version, counts, rejected): read
    from Metaflow's datastore, where its preprocess step left it."""
    metaflow_environment()
    from metaflow.client.core import Run, namespace

    namespace(None)
    task = Run(pathspec)["preprocess"].task
    if task is None:
        raise LookupError(f"{pathspec} has no preprocess task: it did not get that far")
    return task[name].data


def reevaluate(
    client: "MlflowClient", settings: PipelineSettings, version: str, pathspec: str = "latest"
) -> dict[str, Any]:
    """evaluate, alone: a registered version's files on a data refresh's held-out rows. The
    result is tagged on the version (reevaluated: accuracy@data version); nothing is trained."""
    from shared import tracking

    refresh = data_run(pathspec)
    found = client.get_model_version(settings.model_name, version)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = tracking.download_model(client, found, Path(scratch))
        model = {name: (model_dir / name).read_bytes() for name in MODEL_FILES}
    evaluation = evaluate(model, refresh_output(refresh, "dataset"))
    short = str(refresh_output(refresh, "data_version"))[:12]
    client.set_model_version_tag(
        settings.model_name, version, REEVALUATED_TAG, f"{evaluation['test_accuracy']}@{short}"
    )
    return {
        "model": settings.model_name,
        "version": str(version),
        "trained_on": found.tags.get(tracking.DATA_VERSION_TAG, "")[:12],
        "evaluated_on": short,
        "test_accuracy": evaluation["test_accuracy"],
        "test_rows": int(evaluation["test_rows"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="step", required=True)
    evaluating = commands.add_parser("evaluate", help="re-evaluate a registered model version")
    evaluating.add_argument("--version", required=True, help="the registered model's version")
    evaluating.add_argument(
        "--data-run", default="latest", help="a DataRefreshFlow run id (default: the latest)"
    )
    args = parser.parse_args(argv)
    settings = PipelineSettings()
    configure_logging("pipeline-training-steps", "WARNING")
    from shared import tracking

    client = tracking.connect(settings.tracking_uri)
    try:
        result = reevaluate(client, settings, args.version, args.data_run)
    except LookupError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
