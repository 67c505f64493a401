"""End to end: the pattern started from its compose file through local mode (the MLflow server
on a PostgreSQL database of its own, the one-shot trainer, the scheduler, fetch and the
predictor of the champion) as real processes.

One pattern for the module: the MLflow server's start (its database migrated) is the slow part.
The scheduler runs the trainer every 8 s meanwhile, so each test reads only its own runs.
"""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mlflow import MlflowClient

from shared import tracking
from shared.model import Predictor
from shared.testing import REPO_ROOT, LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
EVERY_8S = "* * * * * */8"

# One group: with `--dist loadgroup` the module's tests share one worker, so one pattern.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("batch_training_e2e")]


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPattern]:
    folder = tmp_path_factory.mktemp("batch_training")
    with pattern_running(
        PATTERN,
        BATCH_TRAINING_SCHEDULER_SCHEDULE=EVERY_8S,
        BATCH_TRAINING_SCHEDULER_HEARTBEAT_FILE=str(folder / "heartbeat"),
        BATCH_TRAINING_MLFLOW_ARTIFACTS_DESTINATION=str(folder / "mlartifacts"),
        BATCH_TRAINING_FETCH_OUT_DIR=str(folder / "champion"),
        BATCH_TRAINING_PREDICTOR_MODEL_DIR=str(folder / "champion"),
    ) as running:
        yield running


@pytest.fixture
def client(pattern: LocalPattern) -> MlflowClient:
    return tracking.connect(pattern.url("mlflow"))


def run_trainer(pattern: LocalPattern, **environment: str) -> subprocess.CompletedProcess[str]:
    """The trainer once more, as `docker compose run trainer` does: its command, its env."""
    env = {**pattern.processes["trainer"][0].env, **environment}
    return subprocess.run(
        pattern.services["trainer"].command, env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_make_run_trains_registers_serves_and_the_mlflow_ui_shows_the_run(
    pattern: LocalPattern, client: MlflowClient, tmp_path: Path
) -> None:
    trainer = pattern.processes["trainer"][0]
    trainer.popen.wait(timeout=120)  # nothing waits for the one-shot: the test does
    match = re.search(r"run ([0-9a-f]{32}) done: version (\d+)", trainer.output())
    assert match, trainer.output()
    run = client.get_run(match.group(1))
    version = client.get_model_version("iris", match.group(2))
    ui = httpx2.get(pattern.url("mlflow"), timeout=10)
    champion = tracking.alias_version(client, "iris", "champion")
    assert champion is not None
    served = Predictor(tracking.download_model(client, champion, tmp_path / "champion"))
    # The predictor started on what fetch downloaded once the trainer had exited 0.
    answer = httpx2.post(
        f"{pattern.url('predictor')}/predict", json={"data": [[6.7, 3.0, 5.2, 2.3]]}, timeout=10
    )

    assert trainer.popen.returncode == 0
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows_invalid"] == 10 and run.data.metrics["rows_valid"] == 140
    assert {"data_version", "code_version", "test_accuracy"} <= set(version.tags)
    assert ui.status_code == 200 and "<title>MLflow</title>" in ui.text
    assert served.predict([[5.1, 3.5, 1.4, 0.2]])[0]["label"] == "setosa"
    assert answer.status_code == 200, answer.text
    # The champion when fetch ran, once the one-shot had exited: its version or a scheduled run's.
    served_version = client.get_model_version("iris", answer.json()["model_version"])
    assert int(served_version.version) >= int(match.group(2))
    assert served_version.tags["gate"] == "passed"
    assert answer.json()["predictions"][0]["label"] == "virginica"


def test_a_failed_run_is_recorded_on_the_server_and_the_rekick_succeeds(
    pattern: LocalPattern, client: MlflowClient, tmp_path: Path
) -> None:
    mine = {
        "BATCH_TRAINING_TRAINER_EXPERIMENT": "rekick",
        "BATCH_TRAINING_TRAINER_MODEL_NAME": "rekick",
    }
    missing = tmp_path / "iris.csv"

    failed = run_trainer(pattern, **mine, BATCH_TRAINING_TRAINER_SOURCE=str(missing))
    rekicked = run_trainer(pattern, **mine)

    experiment = client.get_experiment_by_name("rekick")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert failed.returncode == 1, failed.stdout
    assert "the run failed: it is recorded as FAILED" in failed.stdout
    assert rekicked.returncode == 0, rekicked.stdout
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert runs[0].data.tags["failed_step"] == "gather"
    assert str(missing) in runs[0].data.tags["error"]
    assert [str(v.version) for v in client.search_model_versions("name = 'rekick'")] == ["1"]


def test_the_scheduler_runs_the_trainer_on_its_cron_schedule(
    pattern: LocalPattern, client: MlflowClient
) -> None:
    def after_two_runs() -> str | None:
        text = pattern.logs("scheduler")
        return text if text.count("job exited with code 0") >= 2 else None

    logs = wait_until(after_two_runs, timeout=90, what="two scheduled runs")
    experiment = client.get_experiment_by_name("batch-training")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])

    assert "starting the job: " in logs and "training_patterns.batch_training.job" in logs
    assert len([r for r in runs if r.info.status == "FINISHED"]) >= 3  # the one-shot and two more


def test_fetch_of_an_alias_no_version_has_fails_naming_it(
    pattern: LocalPattern, tmp_path: Path
) -> None:
    env = {
        **pattern.processes["fetch"][0].env,
        "BATCH_TRAINING_FETCH_ALIAS": "nobody",
        "BATCH_TRAINING_FETCH_OUT_DIR": str(tmp_path / "model"),
    }

    fetch = subprocess.run(
        pattern.services["fetch"].command, env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert fetch.returncode == 1
    assert "no model to serve: iris has no version aliased nobody" in fetch.stdout
    assert not (tmp_path / "model").exists()
