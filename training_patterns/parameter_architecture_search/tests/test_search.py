"""The search on its own (one in-process worker, SQLite storages): the declared configuration,
every trial logged with its params and score, the trial and time budgets, the pruner, and a
fixed seed repeating the same trials."""

import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from pydantic import ValidationError

from training_patterns.parameter_architecture_search import search, space
from training_patterns.parameter_architecture_search.settings import WorkerSettings


def study_of(settings: WorkerSettings) -> optuna.Study:
    storage = search.open_storage(settings.storage, settings.storage_schema)
    return optuna.load_study(study_name=settings.study, storage=storage)


def summary(study: optuna.Study) -> list[tuple[int, str, dict[str, object], float | None]]:
    return [(t.number, t.state.name, t.params, t.value) for t in study.trials]


def test_the_search_configuration_space_algorithm_and_budget_is_declared(
    worker: WorkerSettings,
) -> None:
    study = search.join_study(worker)

    declared = study.user_attrs["space"]
    assert declared[space.MODEL] == [
        "logistic_regression",
        "random_forest",
        "gradient_boosting",
        "mlp",
    ]
    assert "FloatDistribution(high=100.0, log=True, low=0.001" in declared["logistic_regression.C"]
    assert set(declared) >= {"pca_components", "random_forest.max_depth", "mlp.hidden_units"}
    assert study.user_attrs["budget"] == {"n_trials": 8}
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert (worker.n_trials, worker.timeout_seconds) == (8, 600.0)


def test_every_trial_is_logged_in_the_study_and_to_mlflow_with_its_params_and_score(
    worker: WorkerSettings, client: MlflowClient
) -> None:
    outcome = search.run_worker(worker, client)

    trials = study_of(worker).trials
    experiment = client.get_experiment_by_name(worker.experiment)
    assert experiment is not None
    runs = {
        int(r.data.tags[search.TRIAL_TAG]): r
        for r in client.search_runs([experiment.experiment_id])
    }
    assert outcome.trials == list(range(8)) and len(trials) == 8
    assert sorted(runs) == [t.number for t in trials]
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.tags[search.STATE_TAG] == trial.state.name
        assert run.data.params == {**{k: str(v) for k, v in trial.params.items()}, "seed": "42"}
        last = trial.intermediate_values[max(trial.intermediate_values)]
        assert run.data.metrics[search.SCORE] == pytest.approx(trial.value or last)
    # Seed 42: one trial of eight stopped by the pruner after its second fold, logged as such.
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert [(t.number, len(t.intermediate_values)) for t in pruned] == [(6, 2)]
    assert {t.params[space.MODEL] for t in trials} == set(space.FAMILIES)


def test_the_search_stops_at_the_trial_budget_and_a_late_worker_runs_none(
    worker: WorkerSettings, client: MlflowClient
) -> None:
    small = worker.model_copy(update={"n_trials": 3})

    first = search.run_worker(small, client)
    late = search.run_worker(small, client)  # joins a study whose budget is spent

    trials = study_of(small).trials
    experiment = client.get_experiment_by_name(small.experiment)
    assert experiment is not None
    assert first.trials == [0, 1, 2]
    assert late.trials == []
    # The late worker's one ask is refused before any training: failed, marked, not logged.
    assert [t.state for t in trials[3:]] == [TrialState.FAIL]
    assert trials[3].user_attrs[search.OVER_BUDGET_ATTR] is True
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_the_search_stops_at_the_time_budget(worker: WorkerSettings, client: MlflowClient) -> None:
    timed = worker.model_copy(update={"n_trials": 1000, "timeout_seconds": 1.0})
    started = time.monotonic()

    outcome = search.run_worker(timed, client)

    elapsed = time.monotonic() - started
    assert 1 <= len(outcome.trials) < 1000
    # No trial starts after the timeout: the run ends within one trial of it.
    assert elapsed < 1.0 + 20


def test_a_fixed_seed_repeats_the_same_trials_and_best_trial_and_another_seed_does_not(
    worker: WorkerSettings, client: MlflowClient
) -> None:
    worker = worker.model_copy(update={"n_trials": 6})
    again = worker.model_copy(update={"study": f"{worker.study}-again"})
    other = worker.model_copy(update={"study": f"{worker.study}-other", "seed": 7, "n_trials": 3})

    for settings in (worker, again, other):
        search.run_worker(settings, client)

    first, second, third = (study_of(s) for s in (worker, again, other))
    assert summary(first) == summary(second)
    assert (first.best_trial.number, first.best_params) == (
        second.best_trial.number,
        second.best_params,
    )
    assert first.best_value == second.best_value
    assert [t.params for t in third.trials] != [t.params for t in first.trials[:3]]


def test_the_second_worker_to_join_samples_with_another_seed(worker: WorkerSettings) -> None:
    first = search.join_study(worker)
    second = search.join_study(worker)

    # Seeded alike, the two would propose the same random startup trials.
    proposals = [space.suggest(study.ask()) for study in (first, second)]

    assert first.user_attrs[search.JOINED_ATTR] == 2
    assert proposals[0] != proposals[1]


def test_build_makes_each_family_and_refuses_an_unknown_one() -> None:
    points: dict[str, dict[str, str | int | float]] = {
        "logistic_regression": {"logistic_regression.C": 1.0},
        "random_forest": {"random_forest.n_estimators": 10, "random_forest.max_depth": 2},
        "gradient_boosting": {
            "gradient_boosting.n_estimators": 10, "gradient_boosting.learning_rate": 0.1,
            "gradient_boosting.max_depth": 2,
        },
        "mlp": {"mlp.hidden_units": 4, "mlp.alpha": 1e-3},
    }  # fmt: skip

    built = {f: space.build({"model": f, "pca_components": 3, **p}, 1) for f, p in points.items()}

    assert {f: type(p.steps[-1][1]).__name__ for f, p in built.items()} == {
        "logistic_regression": "LogisticRegression",
        "random_forest": "RandomForestClassifier",
        "gradient_boosting": "GradientBoostingClassifier",
        "mlp": "MLPClassifier",
    }
    assert built["mlp"].steps[1][1].n_components == 3
    with pytest.raises(ValueError, match="unknown model family 'svm'"):
        space.build({"model": "svm", "pca_components": 2}, 1)


def test_settings_refuse_an_empty_budget_and_a_schema_that_is_no_identifier() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        WorkerSettings(n_trials=0)
    with pytest.raises(ValidationError, match="should match pattern"):
        WorkerSettings(storage_schema='optuna"; drop')
