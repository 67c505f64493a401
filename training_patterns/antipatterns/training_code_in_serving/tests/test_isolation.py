"""The serving dependency set alone, in a fresh virtual environment: the server imports and
answers there with no training library present; the antipattern's server cannot even start.

The venv and the code tree are tests/test_dependencies.py's (the serving image's requirements
file, built once and cached; the files the Dockerfile's server stage copies), so this checks
the image as it is built, without Docker.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.catalogue import REPO_ROOT
from shared.model import Predictor
from shared.training import iris_dataset
from tests.test_dependencies import (
    TRAINING_LIBRARIES,
    Image,
    code_copies,
    code_tree,
    fresh_venv,
    stages,
)
from training_patterns.antipatterns.training_code_in_serving import train

PATTERN = Path(__file__).resolve().parents[1]
PACKAGE = "training_patterns.antipatterns.training_code_in_serving"
ROWS = iris_dataset().x[::10].tolist()

pytestmark = pytest.mark.images

# Run in the fresh venv: import `module`, build its app, predict ROWS with the inference code;
# report what failed to import, the training libraries loaded or findable, and the answers.
CHECK = """
import importlib, importlib.util, json, sys
module, model_dir, rows, forbidden = json.loads(sys.argv[1])
try:
    importlib.import_module(module).create_app()
except ModuleNotFoundError as exc:
    print(json.dumps({"missing": exc.name}))
    raise SystemExit
from training_patterns.antipatterns.training_code_in_serving import inference
model = inference.InferenceModel(model_dir)
print(json.dumps({
    "loaded": [m for m in forbidden if m in sys.modules],
    "findable": [m for m in forbidden if importlib.util.find_spec(m) is not None],
    "probabilities": model.predictor.predict_proba(inference.preprocess(rows)).tolist(),
}))
"""


def serving_image_tree(root: Path) -> tuple[Path, Path]:
    """(venv, workdir) of the Dockerfile's server stage, built as the image test builds it."""
    stage = next(s for s in stages(PATTERN / "Dockerfile") if s.name == "server")
    image = Image("server", REPO_ROOT / "requirements/serving.txt", code_copies(stage), "/app")
    return fresh_venv(image.requirements), code_tree(image, root)


def run_in(venv: Path, workdir: Path, module: str, model_dir: Path) -> dict[str, object]:
    spec = [module, str(model_dir), ROWS, TRAINING_LIBRARIES]
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, json.dumps(spec)],
        cwd=workdir,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(workdir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_serving_imports_and_predicts_with_the_serving_set_alone(
    tmp_path: Path, model_dir: Path
) -> None:
    venv, workdir = serving_image_tree(tmp_path)

    answer = run_in(venv, workdir, f"{PACKAGE}.server", model_dir)

    assert answer["loaded"] == [] and answer["findable"] == []
    # The same answers as the training environment's, to the last bit: one inference module.
    expected = Predictor(model_dir).predict_proba(train.training_tensor(iris_dataset()).x[::10])
    assert answer["probabilities"] == expected.tolist()
    assert not (workdir / PACKAGE.replace(".", "/") / "train.py").exists()


def test_bad_server_cannot_start_with_the_serving_set(tmp_path: Path, model_dir: Path) -> None:
    venv, workdir = serving_image_tree(tmp_path)
    for name in ("bad_server.py", "train.py"):  # even given its code, it lacks its libraries
        shutil.copy(PATTERN / name, workdir / PACKAGE.replace(".", "/") / name)

    answer = run_in(venv, workdir, f"{PACKAGE}.bad_server", model_dir)

    assert answer["missing"] in {"optuna", "sklearn", "skl2onnx"}
