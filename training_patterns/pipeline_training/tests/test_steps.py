"""The steps' logic in-process, without Metaflow: validation, the injected failure, evaluate of
train's export, register and its gate (an MLflow store of the module's own), the settings, and
the scheduler's two cadences."""

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving_patterns.batch.scheduler import next_tick
from shared import tracking
from training_patterns.batch_training import data
from training_patterns.pipeline_training import scheduler, steps
from training_patterns.pipeline_training.settings import PipelineSettings, SchedulerSettings


def test_validate_filters_bad_rows_and_fails_only_when_too_few_are_left(tmp_path: Path) -> None:
    rows = steps.gather(PipelineSettings(bad_every=15))
    source = tmp_path / "iris.csv"
    data.write_csv(source, data.bundled_rows(2))  # every second row bad: 75 of 150 valid
    strict = PipelineSettings(source=str(source), min_valid_fraction=0.6)

    valid = steps.validate(rows, PipelineSettings())

    assert steps.counts(rows, valid) == {
        "rows_gathered": 150,
        "rows_valid": 140,
        "rows_invalid": 10,
    }
    with pytest.raises(ValueError, match="only 75 of 150 rows are valid"):
        steps.validate(steps.gather(strict), strict)


def test_the_step_fail_at_names_raises_when_it_starts_and_no_other() -> None:
    drill = PipelineSettings(fail_at="train")

    record = steps.begin(drill, "evaluate")

    assert record["step"] == "evaluate" and record["pid"] > 0
    with pytest.raises(steps.InjectedFailure, match="step train fails"):
        steps.begin(drill, "train")
    with pytest.raises(ValidationError, match="no step 'deploy'"):
        PipelineSettings(fail_at="deploy")


def test_evaluate_scores_the_exported_model_on_the_rows_train_held_out() -> None:
    settings = PipelineSettings()
    valid = steps.validate(steps.gather(settings), settings)
    dataset, version = steps.preprocess(valid)

    model = steps.train(dataset, version, settings)
    evaluation = steps.evaluate(model, dataset)

    card = json.loads(model["model.json"])
    assert set(model) == {"model.onnx", "model.json"}
    assert card["data_version"] == version
    assert evaluation["test_accuracy"] == card["metrics"]["test_accuracy"] >= 0.9
    assert evaluation["test_rows"] == 35  # a quarter of the 140 valid rows


def test_the_scheduler_refreshes_the_data_daily_and_trains_weekly() -> None:
    running = scheduler.schedulers(SchedulerSettings())
    monday = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    refresh, training = running["refresh_flow"], running["training_flow"]
    refreshes = [next_tick(refresh.settings.schedule, monday)]
    trainings = [next_tick(training.settings.schedule, monday)]
    for _ in range(6):
        refreshes.append(next_tick(refresh.settings.schedule, refreshes[-1]))
    trainings.append(next_tick(training.settings.schedule, trainings[-1]))

    assert refresh.job == [
        sys.executable,
        "-m",
        "training_patterns.pipeline_training.refresh_flow",
        "run",
    ]
    assert training.job[-2:] == ["training_patterns.pipeline_training.training_flow", "run"]
    assert [(t - refreshes[0]).days for t in refreshes] == [0, 1, 2, 3, 4, 5, 6]  # daily
    assert (trainings[1] - trainings[0]).days == 7  # weekly
    # Monday's training at 03:00 trains on the data of that day's 02:00 refresh.
    assert (trainings[0].weekday(), trainings[0].hour, refreshes[0].hour) == (0, 3, 2)


def test_scheduler_settings_refuse_a_bad_schedule() -> None:
    with pytest.raises(ValidationError, match="not a cron expression"):
        SchedulerSettings(training_schedule="every monday")


def test_register_records_the_version_and_the_gate_moves_the_alias_only_when_it_passes(
    mlflow_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # without a server the client writes artefacts under ./mlruns
    client = tracking.connect(mlflow_tracking_uri)
    good = PipelineSettings(model_name="gate-test", experiment="gate-test")
    strict = good.model_copy(update={"min_accuracy": 0.999})
    valid = steps.validate(steps.gather(good), good)
    dataset, version = steps.preprocess(valid)
    model = steps.train(dataset, version, good)
    evaluation = steps.evaluate(model, dataset)
    refresh = {"data_version": version, "counts": steps.counts(steps.gather(good), valid),
               "rejected": valid.rejected}  # fmt: skip

    first = steps.register(client, good, model, evaluation, "DataRefreshFlow/1", refresh, "T/1")
    second = steps.register(client, strict, model, evaluation, "DataRefreshFlow/1", refresh, "T/2")

    champion = tracking.alias_version(client, "gate-test", "champion")
    rejected = client.get_model_version("gate-test", second.version)
    card = json.loads(
        Path(client.download_artifacts(first.run_id, "model/model.json", str(tmp_path))).read_text()
    )
    assert first.promoted and not second.promoted
    assert champion is not None and str(champion.version) == first.version == "1"
    assert rejected.tags["gate"] == "rejected" and rejected.aliases == []
    assert card["version"] == "1" and card["code_version"] == rejected.tags["code_version"]
    assert client.get_run(first.run_id).data.metrics["rows_invalid"] == 10
