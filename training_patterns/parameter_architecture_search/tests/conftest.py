"""Fixtures of the search's tests: a model repository and an Optuna storage of the module's own.

MLflow through a SQLite tracking URI (the client writes the database and artefacts itself: the
server's store without the server's start), Optuna on a SQLite file (one process: the e2e test
runs two workers on PostgreSQL). One study and experiment per test, so tests stay apart.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shared import tracking
from training_patterns.parameter_architecture_search.settings import WorkerSettings


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stores")


@pytest.fixture
def client(
    mlflow_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MlflowClient]:
    # Without a server the client puts a new experiment's artefacts under ./mlruns: in the
    # test's own directory.
    monkeypatch.chdir(tmp_path)
    yield tracking.connect(mlflow_tracking_uri)


@pytest.fixture
def worker(stores: Path, client: MlflowClient) -> WorkerSettings:
    """A worker of a study and experiment of its own, a small budget."""
    name = uuid.uuid4().hex[:8]
    return WorkerSettings.model_validate({
        "storage": f"sqlite:///{stores / 'optuna.db'}",
        "study": f"study-{name}",
        "experiment": f"test-{name}",
        "tracking_uri": client.tracking_uri,
        "n_trials": 8,
        "seed": 42,
    })  # fmt: skip
