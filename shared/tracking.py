"""The model repository of the training patterns: MLflow tracking and model registry.

Training-only (the `pipelines` group): training jobs import this, serving code never does. A job
records what it did as one MLflow run, and what it made as one registered model version:

    client = tracking.connect("http://127.0.0.1:5000")
    with tracking.recorded_run(client, "iris-batch-training") as run:   # FAILED, with the error,
        tracking.log_run(client, run, params={...}, metrics={...})       # if the block raises
        version = tracking.register_onnx_model(
            client, run, "iris", model_dir, evaluation={"test_accuracy": 0.97},
            data_version=tracking.data_version(x, y), code_version=tracking.code_version(),
        )
        tracking.set_alias(client, "iris", "champion", version.version)

A model version's artefacts are the directory shared.training.export writes (model.onnx and
its card model.json), so `download_model` gives a directory shared.model.Predictor serves.
"""

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException

logger = logging.getLogger(__name__)

MODEL_PATH = "model"  # where a run keeps its model's artefacts
ERROR_TAG = "error"  # a failed run's error, one line; its traceback is the artefact error.txt
# Tags of a registered model version: what made it, and how good it is.
DATA_VERSION_TAG = "data_version"
CODE_VERSION_TAG = "code_version"
GATE_TAG = "gate"  # on a run and its model version: the evaluation gate passed or rejected
ALIAS_ATTEMPTS = 3


def connect(tracking_uri: str) -> MlflowClient:
    """A client of the MLflow server (http://host:port) for tracking and registry alike."""
    # Logs, not prints: the client writes a "View run" line and progress bars to the terminal.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use (two jobs creating it at once both get it)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # created meanwhile by another job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


@contextmanager
def recorded_run(
    client: MlflowClient,
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Run]:
    """An MLflow run for the block: FINISHED when it ends, FAILED when it raises, with the
    error as the tag `error` and the traceback as the artefact error.txt. The exception goes on:
    the job still exits non-zero, and the next run (a re-kick) is a new run."""
    run = client.create_run(
        experiment_id(client, experiment), run_name=run_name, tags=dict(tags or {})
    )
    run_id = run.info.run_id
    try:
        yield run
    except BaseException as exc:
        # KeyboardInterrupt and SystemExit too: a run stopped half way is no FINISHED run.
        client.set_tag(run_id, ERROR_TAG, f"{type(exc).__name__}: {exc}"[:5000])
        client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def log_run(
    client: MlflowClient,
    run: Run,
    params: Mapping[str, object] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    artefacts: Path | None = None,
    artefact_path: str | None = None,
) -> None:
    """Log params, metrics and tags to the run in one call each, and a file or directory."""
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
    if artefacts is not None:
        if artefacts.is_dir():
            client.log_artifacts(run.info.run_id, str(artefacts), artefact_path)
        else:
            client.log_artifact(run.info.run_id, str(artefacts), artefact_path)


def register_onnx_model(
    client: MlflowClient,
    run: Run,
    name: str,
    model_dir: Path,
    evaluation: Mapping[str, float],
    data_version: str,
    code_version: str,
) -> ModelVersion:
    """Log model_dir (model.onnx and its card model.json, as shared.training.export writes
    them) as the run's `model` artefacts and register them as a new version of `name`.

    The version carries its evaluation, the data version and the code version as tags, and the
    card is rewritten with the registry's version number, so a server of it reports that."""
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(model_dir), MODEL_PATH)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {
        DATA_VERSION_TAG: data_version,
        CODE_VERSION_TAG: code_version,
        **{key: f"{value:.6g}" for key, value in evaluation.items()},
    }
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{MODEL_PATH}", run_id=run_id, tags=tags
    )
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card.update(version=str(version.version), registered_model=name, run_id=run_id)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    client.log_artifact(run_id, str(card_path), MODEL_PATH)
    logger.info("registered %s version %s from run %s", name, version.version, run_id)
    return version


def set_alias(client: MlflowClient, name: str, alias: str, version: str | int) -> None:
    """Point the alias (champion) at the version: whoever serves `name@alias` now gets it.

    MLflow's server sets an alias by reading, then inserting or updating: two jobs setting the
    same alias at once can both try the insert, and on PostgreSQL the second gets a unique
    violation (BAD_REQUEST). Once the row exists the update goes through, so it tries again."""
    for attempt in range(ALIAS_ATTEMPTS):
        try:
            client.set_registered_model_alias(name, alias, str(version))
            return
        except RestException as exc:
            if "unique" not in str(exc).lower() or attempt == ALIAS_ATTEMPTS - 1:
                raise
            logger.info("alias %s of %s set meanwhile by another job: again", alias, name)


@dataclass(frozen=True)
class Gated:
    """A training run's outcome: the version it registered and the gate's verdict on it."""

    run_id: str
    version: str
    test_accuracy: float
    promoted: bool


def gate(
    client: MlflowClient,
    run: Run,
    version: ModelVersion,
    accuracy: float,
    min_accuracy: float,
    alias: str,
) -> Gated:
    """The evaluation gate: the version gets the serving alias only when its test accuracy is at
    least min_accuracy. The verdict, passed or rejected, is tagged on the version and the run."""
    promoted = accuracy >= min_accuracy
    verdict = "passed" if promoted else "rejected"
    name, number = version.name, str(version.version)
    if promoted:
        set_alias(client, name, alias, number)
    client.set_model_version_tag(name, number, GATE_TAG, verdict)
    log_run(client, run, tags={GATE_TAG: verdict})
    logger.info(
        "%s version %s: test accuracy %.4f, gate %s (min %.4f)%s",
        name, number, accuracy, verdict, min_accuracy, f": now {alias}" if promoted else "",
    )  # fmt: skip
    return Gated(run.info.run_id, number, accuracy, promoted)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version the alias points at, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except RestException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def download_model(client: MlflowClient, version: ModelVersion, out_dir: Path) -> Path:
    """The version's model directory (model.onnx, model.json), downloaded into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        path = Path(client.download_artifacts(str(version.run_id), MODEL_PATH, scratch))
        for item in path.iterdir():
            item.replace(out_dir / item.name)
    return out_dir


def data_version(x: np.ndarray, y: np.ndarray) -> str:
    """A hash of the training rows (features and labels, in order): the same rows, the same
    version, on any machine."""
    digest = hashlib.sha256()
    for array in (x, y):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def code_version(repo: Path | None = None) -> str:
    """The git revision of the code that runs, with "-dirty" when the tree has changes; an
    image has no .git (give it the revision at build time), so "unknown" then."""
    cwd = repo or Path(__file__).resolve().parent
    try:
        revision = _git(cwd, "rev-parse", "HEAD")
        dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision}-dirty" if dirty else revision


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
