"""Separate dependency sets: each image installs and copies only what its service imports.

The Dockerfile is read stage by stage; each service is imported in a fresh interpreter and its
modules compared with what its image carries. Add `import onnxruntime` to prep, or import the
preprocessing in pred, and this fails.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.testing import REPO_ROOT

PATTERN = Path(__file__).resolve().parents[1]
PACKAGE = "serving_patterns.prep_pred"
# Libraries that tell the two sides apart (import name -> pip name); training ones in neither.
TELLING = {"onnxruntime": "onnxruntime", "httpx2": "httpx2", "numpy": "numpy"}
TRAINING = {"sklearn", "skl2onnx", "onnx"}


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions by stage name, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (PATTERN / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            current = found.setdefault(match.group(1), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return found


def installed(stage: str) -> set[str]:
    """The packages `pip install -r` installs in a stage: the requirements file it names, copied
    from the repository (`COPY requirements/x.txt /tmp/`), read line by line."""
    copied = {
        Path(line.split()[1]).name: REPO_ROOT / line.split()[1]
        for line in stages()[stage]
        if line.startswith("COPY requirements/")
    }
    names: set[str] = set()
    for line in stages()[stage]:
        if "pip install" in line:
            words = line.split("pip install", 1)[1].split()
            assert "-r" in words, "the image installs a compiled requirements file"
            listed = copied[Path(words[words.index("-r") + 1]).name].read_text().splitlines()
            names |= {re.split(r"[=;\s]", ln)[0] for ln in listed if ln and ln[0] != "#"}
    return names


def copied_modules(stage: str) -> set[str]:
    """The pattern's modules a final stage copies, as dotted names."""
    modules = set()
    for line in stages()[stage]:
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                if source.startswith("serving_patterns/prep_pred/") and source.endswith(".py"):
                    name = Path(source).stem
                    modules.add(PACKAGE if name == "__init__" else f"{PACKAGE}.{name}")
    return modules


def venv_stage(stage: str) -> str:
    line = next(ln for ln in stages()[stage] if ln.startswith("COPY --from") and "/opt/serve" in ln)
    return line.split()[1].removeprefix("--from=")


def imported(service: str) -> set[str]:
    """Every module loaded by importing the service and building its app, in a fresh process."""
    code = (
        "import json, sys\n"
        f"from {PACKAGE}.{service} import create_app\n"
        "create_app()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("service", ["prep", "pred"])
def test_each_service_imports_only_what_its_own_image_carries(service: str) -> None:
    modules = imported(service)
    roots = {m.split(".")[0] for m in modules}
    packages = installed(venv_stage(service))

    own_code = {m for m in modules if m.startswith(PACKAGE)}
    assert own_code <= copied_modules(service), "imports pattern code its image does not copy"
    for module, package in TELLING.items():
        assert (module in roots) == (package in packages), f"{service}: {module} vs its venv"
    assert not roots & TRAINING


def test_the_two_images_differ_in_code_and_libraries() -> None:
    prep_packages, pred_packages = installed("prep-venv"), installed("pred-venv")

    assert "onnxruntime" in pred_packages and "onnxruntime" not in prep_packages
    assert "httpx2" in prep_packages and "httpx2" not in pred_packages
    assert f"{PACKAGE}.preprocessing" in copied_modules("prep")
    assert f"{PACKAGE}.preprocessing" not in copied_modules("pred")
    assert f"{PACKAGE}.pred" not in copied_modules("prep")
    # One training stage feeds both: each image takes its half of the same run's artefacts.
    assert any("--from=train" in ln and "preprocess.json" in ln for ln in stages()["prep"])
    assert any("--from=train" in ln and "model.onnx" in ln for ln in stages()["pred"])
    assert not any("model.onnx" in ln for ln in stages()["prep"])
