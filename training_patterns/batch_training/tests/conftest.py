"""Fixtures of the batch training tests: a model repository of the module's own.

The job's tests talk to MLflow through a SQLite tracking URI, the client writing the database
and artefacts itself: the same store the server keeps, without the server's start (its first
start migrates the database: 20 to 40 s here), a copy of one migrated once
(shared.pytest_plugin's mlflow_tracking_uri). One database per test module, one experiment and
registered model per test, so tests stay apart. test_e2e.py runs the real server.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shared import tracking


@pytest.fixture
def client(
    mlflow_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MlflowClient]:
    # Without a server the client puts a new experiment's artefacts under ./mlruns, and the job
    # its scratch files under ./.local: both in the test's own directory.
    monkeypatch.chdir(tmp_path)
    yield tracking.connect(mlflow_tracking_uri)
