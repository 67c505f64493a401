"""End to end: the pattern started from its compose file through local mode (the MLflow server
on a PostgreSQL database of its own, two search workers sharing one study in that database, the
register one-shot) as real processes. One pattern for the module: the MLflow server's start
(its database migrated) is the slow part.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx2
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from shared import tracking
from shared.testing import LocalPattern, pattern_running, wait_until
from training_patterns.parameter_architecture_search import search
from training_patterns.parameter_architecture_search.settings import WorkerSettings

PATTERN = Path(__file__).resolve().parents[1]
N_TRIALS = 12

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("parameter_architecture_search_e2e")]


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPattern]:
    folder = tmp_path_factory.mktemp("parameter_architecture_search")
    with pattern_running(
        PATTERN,
        PARAMETER_ARCHITECTURE_SEARCH_WORKER_N_TRIALS=str(N_TRIALS),
        PARAMETER_ARCHITECTURE_SEARCH_MLFLOW_ARTIFACTS_DESTINATION=str(folder / "mlartifacts"),
        PARAMETER_ARCHITECTURE_SEARCH_REGISTER_OUT_DIR=str(folder / "study"),
    ) as running:
        register = running.processes["register"][0]
        wait_until(lambda: register.popen.poll() is not None, timeout=120, what="register")
        yield running


def test_two_workers_share_one_study_on_postgresql_and_spend_the_budget_together(
    pattern: LocalPattern,
) -> None:
    workers = pattern.processes["worker"]
    env = workers[0].env
    storage = search.open_storage(
        env["PARAMETER_ARCHITECTURE_SEARCH_STORAGE"], WorkerSettings().storage_schema
    )
    study = optuna.load_study(study_name="iris-search", storage=storage)
    ran = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    surplus = [t for t in study.trials if t not in ran]

    assert [w.popen.returncode for w in workers] == [0, 0]
    assert env["PARAMETER_ARCHITECTURE_SEARCH_STORAGE"].startswith("postgresql")
    assert sorted(t.number for t in ran) == list(range(N_TRIALS))  # none twice, none missing
    assert all(t.user_attrs.get(search.OVER_BUDGET_ATTR) for t in surplus)
    assert {t.user_attrs[search.WORKER_ATTR] for t in ran} == {"worker-1", "worker-2"}
    assert study.user_attrs[search.JOINED_ATTR] == 2


def test_every_trial_is_a_run_the_mlflow_ui_shows_and_the_best_is_registered(
    pattern: LocalPattern,
) -> None:
    client: MlflowClient = tracking.connect(pattern.url("mlflow"))
    experiment = client.get_experiment_by_name("parameter-architecture-search")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if search.STATE_TAG in r.data.tags]
    best = tracking.alias_version(client, "iris-search", "best")
    ui = httpx2.get(pattern.url("mlflow"), timeout=10)

    assert pattern.processes["register"][0].popen.returncode == 0
    assert sorted(int(r.data.tags[search.TRIAL_TAG]) for r in trials) == list(range(N_TRIALS))
    assert all(search.SCORE in r.data.metrics and "model" in r.data.params for r in trials)
    assert best is not None and best.tags[search.STUDY_TAG] == "iris-search"
    assert float(best.tags["test_accuracy"]) >= 0.9
    assert ui.status_code == 200 and "<title>MLflow</title>" in ui.text
