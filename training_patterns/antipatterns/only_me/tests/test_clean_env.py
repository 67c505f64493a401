"""The recorded run re-run in a clean environment: a fresh virtual environment built from the
pinned requirements file alone (tests/test_dependencies.py's, cached), holding only the files
the image copies, reading only what the registry holds. It reproduces the recorded metric and
model hash."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.catalogue import REPO_ROOT
from tests.test_dependencies import Image, code_copies, code_tree, fresh_venv, stages
from training_patterns.antipatterns.only_me import recorded
from training_patterns.antipatterns.only_me.settings import TrainerSettings

PATTERN = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO_ROOT / "requirements/trainer.txt"

pytestmark = pytest.mark.images


def test_recorded_run_is_reproduced_in_a_clean_environment_from_the_registry(
    trainer: TrainerSettings, tmp_path: Path
) -> None:
    _, version, fitted = recorded.train_and_record(trainer)
    stage = next(s for s in stages(PATTERN / "Dockerfile") if s.name == "trainer")
    image = Image("trainer", REQUIREMENTS, code_copies(stage), "/app")
    venv, workdir = fresh_venv(REQUIREMENTS), code_tree(image, tmp_path / "image")
    (workdir / "requirements").mkdir()
    shutil.copy(REQUIREMENTS, workdir / "requirements")  # the image's COPY of it

    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "training_patterns.antipatterns.only_me.reproduce"],
        cwd=workdir,
        env={
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "PYTHONPATH": str(workdir),
            "HOME": str(tmp_path),
            "ONLY_ME_REPRODUCER_TRACKING_URI": trainer.tracking_uri,
            "ONLY_ME_REPRODUCER_MODEL_NAME": trainer.model_name,
            "ONLY_ME_REPRODUCER_VERSION": version,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["reproduced"] is True, answer
    assert answer["missing"] == [] and answer["differences"] == {}
    assert not (workdir / ".git").exists() and fitted.model_sha256
