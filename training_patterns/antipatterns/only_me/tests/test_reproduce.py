"""The recorded run holds everything a re-run needs, and a re-run from the registry reproduces
its metric and model hash; the notebook's model cannot be re-run, and the check names what is
missing. The clean-environment re-run is tests/test_clean_env.py."""

from pathlib import Path

import pytest

from shared import tracking
from shared.catalogue import REPO_ROOT
from training_patterns.antipatterns.only_me import notebook, recorded, reproduce
from training_patterns.antipatterns.only_me.settings import TrainerSettings

REQUIREMENTS = REPO_ROOT / "requirements/trainer.txt"


def test_recorded_run_holds_everything_a_rerun_needs(trainer: TrainerSettings) -> None:
    run_id, version, fitted = recorded.train_and_record(trainer)

    found_run, record = reproduce.record_of(
        tracking.connect(trainer.tracking_uri), trainer.model_name
    )

    assert found_run == run_id and version == "1"
    assert [name for name in recorded.RECORD if name not in record] == []
    assert record["model_sha256"] == fitted.model_sha256
    assert record["seed"] == "42" and len(record["data_version"]) == 64


def test_rerun_from_the_registry_reproduces_the_metric_and_model_hash(
    trainer: TrainerSettings, tmp_path: Path
) -> None:
    recorded.train_and_record(trainer)
    _, record = reproduce.record_of(tracking.connect(trainer.tracking_uri), trainer.model_name)

    result = reproduce.check(record, REQUIREMENTS, tmp_path / "rerun")

    assert result.reproduced, result.as_json()


@pytest.mark.parametrize(
    ("name", "value"),
    [("seed", "7"), ("regularization", "0.05"), ("data_version", "0" * 64)],
)
def test_rerun_fails_when_the_record_does_not_match(
    trainer: TrainerSettings, tmp_path: Path, name: str, value: str
) -> None:
    recorded.train_and_record(trainer)
    _, record = reproduce.record_of(tracking.connect(trainer.tracking_uri), trainer.model_name)

    result = reproduce.check({**record, name: value}, REQUIREMENTS, tmp_path / "rerun")

    assert not result.reproduced
    assert "model_sha256" in result.differences or name in result.differences


def test_rerun_names_an_environment_that_is_not_the_recorded_one(
    trainer: TrainerSettings, tmp_path: Path
) -> None:
    recorded.train_and_record(trainer)
    _, record = reproduce.record_of(tracking.connect(trainer.tracking_uri), trainer.model_name)
    other = tmp_path / "other.txt"
    other.write_text("scikit-learn==1.0\n")

    result = reproduce.check(record, other, tmp_path / "rerun")

    assert list(result.differences) == ["requirements_sha256"]


def test_notebook_leaves_nothing_to_rerun_and_differs_each_time(tmp_path: Path) -> None:
    first = notebook.run(tmp_path / "a")
    second = notebook.run(tmp_path / "b")
    # All that leaves the laptop: the model file and its card.
    record = reproduce.record_of_card(tmp_path / "a" / "model.json")

    result = reproduce.check(record, REQUIREMENTS, tmp_path / "rerun")

    assert not result.reproduced
    assert result.missing == [
        "regularization",
        "seed",
        "data_version",
        "code_sha256",
        "requirements_sha256",
        "libraries",
    ]
    assert first["onnx_sha256"] != second["onnx_sha256"]
