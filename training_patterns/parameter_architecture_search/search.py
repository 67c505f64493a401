"""A search worker: joins the study in Optuna's relational storage and runs trials until the
study's budget is spent, then exits. Start as many as you like on the same storage:

    python -m training_patterns.parameter_architecture_search.search

The search, declared here and in space.py:
- space: space.FAMILIES and space.COMMON (the model family is a parameter: the architecture);
- algorithm: TPE (Optuna's TPESampler), seeded, after STARTUP_TRIALS random trials; a
  MedianPruner stops a trial whose mean score after a fold is below the median of the finished
  trials' at that fold;
- budget: N_TRIALS for the study, whatever the number of workers (each worker stops once the
  study holds that many trials), and TIMEOUT_SECONDS for each worker.
Each trial is scored by cross-validated accuracy on the training split (the held-out split
stays for the best model's evaluation) and recorded twice: in the study (what the sampler
learns from) and as an MLflow run with its params and score (what a person reads).
"""

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from mlflow import MlflowClient
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.model_selection import StratifiedKFold, train_test_split
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared import tracking
from shared.database import sqlalchemy_url
from shared.logs import configure_logging
from shared.training import SEED, Dataset, iris_dataset
from training_patterns.parameter_architecture_search import space
from training_patterns.parameter_architecture_search.settings import (
    COMMON_FIELDS,
    RegisterSettings,
    WorkerSettings,
)

logger = logging.getLogger(__name__)

# Tags of a trial's MLflow run, and the user attributes of a trial in the study.
STUDY_TAG, TRIAL_TAG, STATE_TAG, WORKER_ATTR = "study", "trial_number", "trial_state", "worker"
SCORE = "cv_accuracy"
JOINED_ATTR = "workers_joined"  # a study attribute: how many workers have joined it
OVER_BUDGET_ATTR = "over_budget"


class OverBudget(Exception):
    """A trial numbered past the budget: asked for in the instant the last one was."""


@dataclass(frozen=True)
class WorkerOutcome:
    worker: str
    trials: list[int]  # the numbers of the trials this worker ran
    study_trials: int  # trials of the study in all, when it stopped


def training_split(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The rows a search may look at: the training split of shared.training.export (the same
    call), so the held-out rows that evaluate the best model never pick it."""
    x_train, _, y_train, _ = train_test_split(
        dataset.x, dataset.y, test_size=0.25, random_state=SEED, stratify=dataset.y
    )
    return x_train, y_train


def open_storage(url: str, schema: str) -> RDBStorage:
    """Optuna's relational storage. On PostgreSQL its tables live in a schema of their own:
    MLflow keeps its tables in the same database, and both name one `alembic_version`."""
    url = sqlalchemy_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        options = {"connect_args": {"options": f"-csearch_path={schema}"}}
        return RDBStorage(url, engine_kwargs=options)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return RDBStorage(url)


@contextmanager
def one_at_a_time(url: str, schema: str) -> Iterator[None]:
    """On PostgreSQL, one worker at a time creates the schema, the tables and the study: two
    that start together would both try (a unique violation for the second). A session-level
    advisory lock, held while the block runs. SQLite has one process: no lock."""
    url = sqlalchemy_url(url)
    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(hashtext('optuna-join'))"))
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext('optuna-join'))"))
                connection.commit()
    finally:
        engine.dispose()


def join_study(settings: WorkerSettings) -> optuna.Study:
    """The study, created by the first worker and loaded by the others, with this worker's
    sampler and pruner. The k-th worker to join seeds its sampler with SEED + k: one worker
    alone is reproducible, and two do not propose the same random startup trials."""
    with one_at_a_time(settings.storage, settings.storage_schema):
        storage = open_storage(settings.storage, settings.storage_schema)
        study = optuna.create_study(
            study_name=settings.study, storage=storage, direction="maximize", load_if_exists=True
        )
        joined = int(study.user_attrs.get(JOINED_ATTR, 0))
        study.set_user_attr(JOINED_ATTR, joined + 1)
        if joined == 0:
            study.set_user_attr("space", space.describe())
            study.set_user_attr("budget", {"n_trials": settings.n_trials})
    study.sampler = optuna.samplers.TPESampler(
        seed=settings.seed + joined, n_startup_trials=settings.startup_trials
    )
    study.pruner = optuna.pruners.MedianPruner(
        n_startup_trials=settings.startup_trials, n_warmup_steps=1
    )
    logger.info("joined study %s as worker %d", settings.study, joined + 1)
    return study


def score_trial(
    trial: optuna.Trial, params: space.Params, x: np.ndarray, y: np.ndarray, folds: int, seed: int
) -> tuple[float, int | None]:
    """Mean accuracy over the folds, reported after each one; (the mean so far, the fold) when
    the pruner stops the trial there, else (the mean, None)."""
    scores: list[float] = []
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
    for fold, (fit_rows, score_rows) in enumerate(splits):
        model = space.build(params, seed).fit(x[fit_rows], y[fit_rows])
        scores.append(float(model.score(x[score_rows], y[score_rows])))
        trial.report(float(np.mean(scores)), fold)
        # After the last fold the score is whole: nothing left to save by stopping.
        if fold < folds - 1 and trial.should_prune():
            return float(np.mean(scores)), fold
    return float(np.mean(scores)), None


def make_objective(
    settings: WorkerSettings, client: MlflowClient, worker: str, ran: list[int]
) -> Callable[[optuna.Trial], float]:
    x, y = training_split(iris_dataset())

    def objective(trial: optuna.Trial) -> float:
        if trial.number >= settings.n_trials:
            trial.set_user_attr(OVER_BUDGET_ATTR, True)
            trial.study.stop()
            raise OverBudget(f"trial {trial.number} is past the budget of {settings.n_trials}")
        params = space.suggest(trial)
        trial.set_user_attr(WORKER_ATTR, worker)
        ran.append(trial.number)
        tags = {STUDY_TAG: settings.study, TRIAL_TAG: str(trial.number), WORKER_ATTR: worker}
        with tracking.recorded_run(
            client, settings.experiment, run_name=f"trial-{trial.number}", tags=tags
        ) as run:
            tracking.log_run(client, run, params={**params, "seed": settings.seed})
            score, pruned_at = score_trial(trial, params, x, y, settings.cv_folds, settings.seed)
            state = TrialState.PRUNED if pruned_at is not None else TrialState.COMPLETE
            tracking.log_run(client, run, metrics={SCORE: score}, tags={STATE_TAG: state.name})
        logger.info(
            "trial %d %s: %s %.4f%s", trial.number, params[space.MODEL], SCORE, score,
            f", pruned after fold {pruned_at + 1}" if pruned_at is not None else "",
        )  # fmt: skip
        if pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after fold {pruned_at + 1}")
        return score

    return objective


def run_worker(settings: WorkerSettings, client: MlflowClient) -> WorkerOutcome:
    """Join the study and run trials until the study has N_TRIALS or TIMEOUT_SECONDS pass."""
    space.quiet_fits()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials are logged here
    worker = os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"
    study = join_study(settings)
    ran: list[int] = []
    study.optimize(
        make_objective(settings, client, worker, ran),
        timeout=settings.timeout_seconds,
        # The shared budget: after each trial, stop once the study holds N_TRIALS trials in any
        # state (running ones included: another worker's trial in flight counts).
        callbacks=[MaxTrialsCallback(settings.n_trials, states=None)],
        catch=(OverBudget,),
        gc_after_trial=False,
    )
    total = len(study.get_trials(deepcopy=False))
    logger.info("worker %s done: ran %d trials, the study has %d", worker, len(ran), total)
    return WorkerOutcome(worker, ran, total)


def settings_for_register(settings: WorkerSettings, **overrides: object) -> RegisterSettings:
    """The register step's settings for the same study (tests and the README's demo)."""
    common = settings.model_dump(include=set(COMMON_FIELDS))
    return RegisterSettings.model_validate({**common, **overrides})


def main() -> int:
    settings = WorkerSettings()
    configure_logging("parameter-architecture-search-worker", settings.log_level)
    try:
        run_worker(settings, tracking.connect(settings.tracking_uri))
    except Exception:
        logger.exception("the worker failed; the study keeps its trials: start it again")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
