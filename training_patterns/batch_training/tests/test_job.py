"""The job against a model repository of its own (a SQLite tracking store): what one run
records, the validation, the failed run and its re-kick, the gate."""

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shared import tracking
from shared.model import Predictor
from training_patterns.batch_training import data, job
from training_patterns.batch_training.settings import TrainerSettings

LABELS = ["setosa", "versicolor", "virginica"]


def settings(**overrides: object) -> TrainerSettings:
    """A trainer of its own experiment and registered model: tests share one database."""
    name = uuid.uuid4().hex[:8]
    return TrainerSettings.model_validate(
        {"experiment": f"test-{name}", "model_name": f"iris-{name}", **overrides}
    )


def test_a_run_registers_a_version_with_its_evaluation_data_version_and_code_version(
    client: MlflowClient, tmp_path: Path
) -> None:
    trainer = settings()

    outcome = job.run_job(trainer, client)

    run = client.get_run(outcome.run_id)
    version = client.get_model_version(trainer.model_name, outcome.version)
    rows = job.preprocess(data.validate(data.bundled_rows(trainer.bad_every), LABELS))
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == outcome.test_accuracy >= 0.9
    assert version.run_id == outcome.run_id
    assert version.tags["test_accuracy"] == f"{outcome.test_accuracy:.6g}"
    assert version.tags["data_version"] == tracking.data_version(rows.x, rows.y)
    assert version.tags["code_version"] == tracking.code_version()
    assert run.data.tags["data_version"] == version.tags["data_version"]
    assert run.data.tags["gate"] == version.tags["gate"] == "passed"
    assert outcome.promoted


def test_the_registered_model_is_served_by_the_model_server_code(
    client: MlflowClient, tmp_path: Path
) -> None:
    trainer = settings()
    outcome = job.run_job(trainer, client)

    champion = tracking.alias_version(client, trainer.model_name, trainer.serving_alias)
    assert champion is not None
    predictor = Predictor(tracking.download_model(client, champion, tmp_path / "served"))
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
    answers = predictor.predict([setosa, virginica])

    assert str(champion.version) == outcome.version
    assert predictor.card.version == outcome.version  # the card names the registry's version
    assert predictor.card.extra["registered_model"] == trainer.model_name
    assert [a["label"] for a in answers] == ["setosa", "virginica"]


def test_invalid_rows_are_filtered_and_counted_not_a_crash(client: MlflowClient) -> None:
    trainer = settings(bad_every=15)

    outcome = job.run_job(trainer, client)

    run = client.get_run(outcome.run_id)
    rejected = json.loads(
        Path(client.download_artifacts(outcome.run_id, "invalid_rows.json", ".")).read_text()
    )
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows_gathered"] == 150
    assert run.data.metrics["rows_invalid"] == 10
    assert run.data.metrics["rows_valid"] == 140
    assert [r["row"] for r in rejected] == list(range(15, 151, 15))
    assert {r["reason"] for r in rejected} == {
        "sepal_length: not a number",
        "petal_width: empty",
        "petal_length: out of range",
        "species: unknown label",
        "sepal_width: not finite",
    }


def test_a_failing_step_leaves_a_failed_run_with_its_error_and_the_job_can_be_rekicked(
    client: MlflowClient, tmp_path: Path
) -> None:
    source = tmp_path / "export" / "iris.csv"  # the export has not landed yet
    trainer = settings(source=str(source))

    with pytest.raises(FileNotFoundError):
        job.run_job(trainer, client)
    data.write_csv(source, data.bundled_rows(15))  # it lands: the same job again
    rekicked = job.run_job(trainer, client)

    experiment = client.get_experiment_by_name(trainer.experiment)
    assert experiment is not None
    failed, finished = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    error_txt = Path(client.download_artifacts(failed.info.run_id, "error.txt", ".")).read_text()
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failed_step"] == "gather"
    assert failed.data.tags["error"].startswith("FileNotFoundError: ")
    assert str(source) in failed.data.tags["error"]
    assert "Traceback" in error_txt
    assert client.search_model_versions(f"run_id = '{failed.info.run_id}'") == []
    assert finished.info.run_id == rekicked.run_id
    assert finished.info.status == "FINISHED"
    assert finished.data.params["source"] == str(source)
    assert rekicked.version == "1"


def test_a_source_of_mostly_bad_rows_fails_the_validation_step(
    client: MlflowClient, tmp_path: Path
) -> None:
    source = tmp_path / "iris.csv"
    data.write_csv(source, data.bundled_rows(2))  # every second row bad: 75 of 150 valid
    trainer = settings(source=str(source), min_valid_fraction=0.6)

    with pytest.raises(ValueError, match="only 75 of 150 rows are valid"):
        job.run_job(trainer, client)

    experiment = client.get_experiment_by_name(trainer.experiment)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["failed_step"] == "validate"
    assert run.data.metrics["rows_invalid"] == 75  # counted before the step gave up


def test_the_gate_leaves_the_alias_on_the_last_version_good_enough(client: MlflowClient) -> None:
    good = settings()
    strict = good.model_copy(update={"min_accuracy": 0.999})

    first = job.run_job(good, client)
    second = job.run_job(strict, client)

    champion = tracking.alias_version(client, good.model_name, good.serving_alias)
    rejected = client.get_model_version(good.model_name, second.version)
    assert first.promoted and not second.promoted
    assert (first.version, second.version) == ("1", "2")
    assert champion is not None and str(champion.version) == first.version
    assert rejected.tags["gate"] == "rejected"
    assert rejected.aliases == []


def test_a_second_run_on_the_same_rows_has_the_same_data_version(client: MlflowClient) -> None:
    trainer = settings()
    other_rows = settings(bad_every=7)

    versions = [
        client.get_model_version(t.model_name, job.run_job(t, client).version).tags
        for t in (trainer, trainer, other_rows)
    ]

    assert versions[0]["data_version"] == versions[1]["data_version"]
    assert versions[0]["data_version"] != versions[2]["data_version"]
