"""A model repository of the module's own: an MLflow SQLite tracking URI, the client writing
the store itself (the server's first start costs 20 to 40 s; the README's Try it runs it)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.catalogue import REPO_ROOT
from training_patterns.antipatterns.only_me.settings import TrainerSettings


@pytest.fixture
def trainer(
    mlflow_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrainerSettings]:
    # Without a server the client puts artefacts under ./mlruns: the test's own directory.
    monkeypatch.chdir(tmp_path)
    yield TrainerSettings(
        tracking_uri=mlflow_tracking_uri,
        model_name=f"only-me-{tmp_path.name}",
        requirements=str(REPO_ROOT / "requirements/trainer.txt"),
        work_dir=str(tmp_path / "work"),
    )
