"""The flows as a person (or the scheduler) runs them: real Metaflow processes, a datastore of the
module's own, and an MLflow store of the module's own (shared.pytest_plugin's
mlflow_tracking_uri: a SQLite store the steps write, without the server's start).

One pipeline for the module, each flow run once (Metaflow starts a process per step): the data
refresh, then the training with its register step made to fail, then `resume`. The tests read
what those runs left in Metaflow's records and in MLflow.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from shared import tracking
from training_patterns.pipeline_training import runs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline_training_flows")]

MODULE = "training_patterns.pipeline_training"


@dataclass
class Pipeline:
    env: dict[str, str]
    folder: Path
    refresh: subprocess.CompletedProcess[str]
    failed: subprocess.CompletedProcess[str]
    resumed: subprocess.CompletedProcess[str]

    def run(self, module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"{MODULE}.{module}", *args],
            env={**self.env, **env}, cwd=self.folder,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    def runs(self, flow: str) -> list[Any]:
        """The flow's Metaflow runs, oldest first, read from this module's datastore."""
        from metaflow.client.core import Flow, metadata, namespace

        metadata(f"local@{self.env['METAFLOW_DATASTORE_SYSROOT_LOCAL']}")  # this module's records
        namespace(None)
        return list(Flow(flow).runs())[::-1]  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def pipeline(
    mlflow_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("pipeline_training")
    env = {
        **os.environ,
        # Metaflow on a folder of the module's own: no service, no user configuration.
        "METAFLOW_HOME": str(folder / "metaflow-home"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(folder / "datastore"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "USERNAME": "pipeline-test",
        "PIPELINE_TRAINING_PIPELINE_TRACKING_URI": mlflow_tracking_uri,
    }
    pipeline = Pipeline(env, folder, *(None,) * 3)  # type: ignore[arg-type]
    pipeline.refresh = pipeline.run("refresh_flow", "run")
    pipeline.failed = pipeline.run(
        "training_flow", "run", PIPELINE_TRAINING_PIPELINE_FAIL_AT="register"
    )
    pipeline.resumed = pipeline.run("training_flow", "resume")
    yield pipeline


@pytest.fixture
def client(pipeline: Pipeline) -> MlflowClient:
    return tracking.connect(pipeline.env["PIPELINE_TRAINING_PIPELINE_TRACKING_URI"])


def test_the_refresh_filters_and_counts_bad_rows_and_stores_the_dataset(
    pipeline: Pipeline,
) -> None:
    (refresh,) = pipeline.runs("DataRefreshFlow")
    stored = refresh["preprocess"].task

    assert pipeline.refresh.returncode == 0, pipeline.refresh.stderr
    assert refresh.successful
    assert stored["counts"].data == {"rows_gathered": 150, "rows_valid": 140, "rows_invalid": 10}
    assert [r["row"] for r in stored["rejected"].data] == list(range(15, 151, 15))
    dataset = stored["dataset"].data
    assert stored["data_version"].data == tracking.data_version(dataset.x, dataset.y)
    assert "140 rows valid, 10 invalid" in pipeline.refresh.stdout


def test_resume_starts_at_the_failed_step_and_does_not_recompute_the_steps_before_it(
    pipeline: Pipeline, client: MlflowClient
) -> None:
    failed, resumed = pipeline.runs("TrainingFlow")
    before = {r["step"]: r for r in failed["evaluate"].task["ran"].data}
    after = {r["step"]: r for r in resumed["register"].task["ran"].data}

    assert pipeline.failed.returncode != 0
    assert "step register fails: PIPELINE_TRAINING_PIPELINE_FAIL_AT=register" in (
        pipeline.failed.stdout + pipeline.failed.stderr
    )
    assert not failed.successful and not failed["register"].task.successful
    assert pipeline.resumed.returncode == 0, pipeline.resumed.stderr
    assert resumed.successful
    # Steps before k: cloned from the failed run, their record (time, process) theirs.
    for name in ("start", "train", "evaluate"):
        assert resumed[name].task.metadata_dict.get("origin-run-id") == failed.id
        assert "origin-task-id" in resumed[name].task.metadata_dict
    assert after["train"] == before["train"] and after["evaluate"] == before["evaluate"]
    assert resumed["train"].task["model"].data == failed["train"].task["model"].data
    # Step k ran again, in a process of the resume's, after the failed run had ended.
    assert "origin-task-id" not in resumed["register"].task.metadata_dict
    assert after["register"]["pid"] != before["evaluate"]["pid"]
    assert after["register"]["at"] > failed["register"].task.created_at.timestamp() - 1
    assert [str(v.version) for v in client.search_model_versions("name = 'iris'")] == ["1"]


def test_the_pipeline_registers_a_version_with_its_evaluation_data_version_and_code_version(
    pipeline: Pipeline, client: MlflowClient
) -> None:
    (_, resumed) = pipeline.runs("TrainingFlow")
    (refresh,) = pipeline.runs("DataRefreshFlow")
    version = client.get_model_version("iris", "1")
    run = client.get_run(str(version.run_id))
    champion = tracking.alias_version(client, "iris", "champion")

    assert version.tags["data_version"] == refresh["preprocess"].task["data_version"].data
    # The git revision (other work in the checkout may make it dirty meanwhile).
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", version.tags["code_version"])
    assert (
        float(version.tags["test_accuracy"])
        == resumed["evaluate"].task["evaluation"].data["test_accuracy"]
        >= 0.9
    )
    assert version.tags["gate"] == run.data.tags["gate"] == "passed"
    assert champion is not None and str(champion.version) == "1"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows_invalid"] == 10 and run.data.metrics["rows_valid"] == 140
    assert run.data.params["data_run"] == refresh.pathspec
    assert run.data.tags["pipeline_run"] == resumed.pathspec
    assert f"mlflow run {run.info.run_id}: version 1" in pipeline.resumed.stdout


def test_evaluate_runs_alone_on_a_registered_version_and_trains_nothing(
    pipeline: Pipeline, client: MlflowClient
) -> None:
    trainings = len(pipeline.runs("TrainingFlow"))

    alone = pipeline.run("steps", "evaluate", "--version", "1")

    assert alone.returncode == 0, alone.stderr
    result = json.loads(alone.stdout.splitlines()[-1])
    version = client.get_model_version("iris", "1")
    assert result["version"] == "1" and result["test_rows"] == 35
    assert result["test_accuracy"] == float(version.tags["test_accuracy"])
    assert result["evaluated_on"] == result["trained_on"] == version.tags["data_version"][:12]
    assert version.tags["reevaluated"] == f"{result['test_accuracy']}@{result['evaluated_on']}"
    assert len(pipeline.runs("TrainingFlow")) == trainings  # no flow ran


def test_the_runs_table_shows_each_steps_status_and_the_cloned_steps(pipeline: Pipeline) -> None:
    shown = runs.step_table(datastore=pipeline.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"])

    assert shown == [
        "DataRefreshFlow   status    start       gather      validate    preprocess  end",
        "  run 1           finished  ran         ran         ran         ran         ran",
        "TrainingFlow      status    start       train       evaluate    register    end",
        "  run 1           failed    ran         ran         ran         failed      -",
        "  run 2           finished  cloned      cloned      cloned      ran         ran",
    ]
