"""The best trial's model: registered in MLflow with its evaluation and params, served by the
model server code, with Optuna's charts written as PNG files."""

import uuid
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from shared import tracking
from shared.model import Predictor
from training_patterns.parameter_architecture_search import register, search, space
from training_patterns.parameter_architecture_search.settings import WorkerSettings

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_best_trial_is_registered_with_its_params_evaluation_and_charts(
    worker: WorkerSettings, client: MlflowClient, tmp_path: Path
) -> None:
    searched = worker.model_copy(update={"n_trials": 6})
    search.run_worker(searched, client)
    settings = search.settings_for_register(
        searched, model_name=f"iris-{uuid.uuid4().hex[:8]}", out_dir=str(tmp_path / "out")
    )

    registered = register.register_best(settings, client)

    study = optuna.load_study(
        study_name=searched.study, storage=search.open_storage(searched.storage, "optuna")
    )
    version = client.get_model_version(settings.model_name, registered.version)
    run = client.get_run(registered.run_id)
    best = tracking.alias_version(client, settings.model_name, settings.alias)
    artefacts = {a.path for a in client.list_artifacts(registered.run_id, "charts")}
    assert (registered.trial, registered.params) == (study.best_trial.number, study.best_params)
    assert registered.cv_accuracy == study.best_value
    assert best is not None and str(best.version) == registered.version == "1"
    assert version.tags[search.TRIAL_TAG] == str(study.best_trial.number)
    assert version.tags[search.STUDY_TAG] == searched.study
    assert version.tags[space.MODEL] == study.best_params[space.MODEL]
    assert float(version.tags["test_accuracy"]) == pytest.approx(registered.test_accuracy, abs=1e-5)
    assert float(version.tags[search.SCORE]) == pytest.approx(study.best_value, abs=1e-5)
    assert {"data_version", "code_version"} <= set(version.tags)
    assert run.data.params == {**{k: str(v) for k, v in study.best_params.items()}, "seed": "42"}
    assert run.data.metrics["test_accuracy"] == registered.test_accuracy >= 0.9
    assert artefacts == {"charts/optimization_history.png", "charts/param_importances.png"}
    for chart in registered.charts:
        assert chart.read_bytes().startswith(PNG) and chart.stat().st_size > 10_000


def test_the_registered_model_is_served_by_the_model_server_code(
    worker: WorkerSettings, client: MlflowClient, tmp_path: Path
) -> None:
    searched = worker.model_copy(update={"n_trials": 2})
    search.run_worker(searched, client)
    settings = search.settings_for_register(searched, model_name=f"iris-{uuid.uuid4().hex[:8]}")

    registered = register.register_best(settings, client)

    best = tracking.alias_version(client, settings.model_name, settings.alias)
    assert best is not None
    predictor = Predictor(tracking.download_model(client, best, tmp_path / "served"))
    answers = predictor.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert predictor.card.version == registered.version
    assert predictor.card.extra["trial"] == registered.trial
    assert [a["label"] for a in answers] == ["setosa", "virginica"]


def test_register_of_a_study_without_a_finished_trial_fails_naming_it(
    worker: WorkerSettings, client: MlflowClient
) -> None:
    study = search.join_study(worker)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)

    with pytest.raises(ValueError, match=f"study {worker.study} has no finished trial"):
        register.register_best(search.settings_for_register(worker), client)
