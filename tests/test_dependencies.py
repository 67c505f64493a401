"""Each image installs one compiled requirements file, and that file alone runs what the image runs.

requirements/<role>.txt is compiled from pyproject.toml's groups with constraints.txt as the only
pin source (`make requirements`); the Dockerfiles and `make setup` install those files with
--no-deps. The checks here:

- the files are what `make requirements` makes today (stale files fail, naming the command);
- every pin comes from constraints.txt, and httpx2 never goes without sniffio;
- every Dockerfile installs only such files, typing no package name of its own;
- for each image (each stage compose runs) and each build stage that runs Python, its virtual
  environment is built alone from its requirements file in a fresh venv, with only the code the
  stage copies on the path, and every module its commands run is imported there: uvicorn apps
  through uvicorn's own loader (factory called, --http protocol loaded), `python -m` modules
  imported, `python -c` probes' imports imported. A serving image fails if a training library
  is importable in it.

The venvs are cached by the requirements file's hash (and the interpreter's version) under
$ML_PATTERNS_VENV_CACHE, default ~/.cache/ml-patterns-venvs, so a rerun costs seconds.
"""

import fcntl
import filecmp
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from uv import find_uv_bin

from shared.catalogue import REPO_ROOT
from shared.localmode import interpolate
from tests.conftest import implemented

REQUIREMENTS = REPO_ROOT / "requirements"
TRAINING_ROLES = {"training", "trainer"}
TRAINING_LIBRARIES = ["sklearn", "skl2onnx", "onnx", "mlflow", "optuna", "metaflow"]
DOCKERFILES = sorted(p for e in implemented() for p in e.path.glob("Dockerfile*"))
COMPOSE_FILES = [e.path / "compose.yaml" for e in implemented()]
VENV_CACHE = Path(
    os.environ.get("ML_PATTERNS_VENV_CACHE") or Path.home() / ".cache" / "ml-patterns-venvs"
)
# Part of every cache key: bump it when what a cached venv holds changes.
VENV_LAYOUT = "1"


def _name(line: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=;\s\[]", line, maxsplit=1)[0]).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of each line of a requirements or constraints file."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"\s*([^=;\s]+)==([^;\s]+)", line)
            assert match, f"{path.name}: not an exact pin: {line}"
            found[_name(match.group(1))] = match.group(2)
    return found


# --- the requirements files ---------------------------------------------------------------------


def test_requirements_files_are_what_make_requirements_compiles(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REQUIREMENTS / "compile.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    fresh = {p.name for p in tmp_path.glob("*.txt")}
    committed = {p.name for p in REQUIREMENTS.glob("*.txt")}
    stale = sorted(
        name
        for name in fresh | committed
        if name not in fresh
        or name not in committed
        or not filecmp.cmp(tmp_path / name, REQUIREMENTS / name, shallow=False)
    )
    assert not stale, f"stale: {stale}; run `make requirements` and commit requirements/"


def test_dev_environment_has_every_group() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    groups = {"base", *pyproject["project"]["optional-dependencies"]}

    assert set(pyproject["tool"]["ml-patterns"]["requirements"]["dev"]) == groups


def test_every_pin_comes_from_constraints() -> None:
    constraints = pins(REPO_ROOT / "constraints.txt")

    for path in sorted(REQUIREMENTS.glob("*.txt")):
        for name, version in pins(path).items():
            assert constraints.get(name) == version, (
                f"{path.name}: {name}=={version}, constraints.txt has {constraints.get(name)}: "
                "pin it in constraints.txt, then `make requirements`"
            )


def test_httpx2_goes_nowhere_without_sniffio() -> None:
    # httpcore2 retries a failing `import sniffio` on every async request: half the throughput.
    for path in sorted(REQUIREMENTS.glob("*.txt")):
        names = pins(path)
        assert "httpx2" not in names or "sniffio" in names, path.name


# --- the Dockerfiles ----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    lines: list[str]  # instructions, continuation lines joined, comments dropped
    workdir: str = "/"


def stages(dockerfile: Path) -> list[Stage]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        if match := re.match(r"FROM \S+(?:\s+AS\s+(\S+))?", line):
            found.append(Stage(match.group(1) or str(len(found)), []))
        elif found and line.strip() and not line.startswith("#"):
            found[-1].lines.append(line.strip())
            if line.startswith("WORKDIR "):
                found[-1].workdir = line.split()[1]
    return found


def pip_installs(stage: Stage) -> list[tuple[str, list[str]]]:
    """(venv, pip arguments) of each `<venv>/bin/pip install` in a RUN line."""
    return [
        (match.group(1), match.group(2).split())
        for line in stage.lines
        if line.startswith("RUN ")
        for match in re.finditer(r"(/\S+)/bin/pip install ([^&;]+)", line)
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dockerfile_installs_only_compiled_requirements(dockerfile: Path) -> None:
    for stage in stages(dockerfile):
        text = "\n".join(stage.lines)
        assert not re.search(r"(?<!/bin/)pip install", text.replace("/bin/pip install", "")), (
            f"{stage.name}: install with <venv>/bin/pip"
        )
        for venv, args in pip_installs(stage):
            assert args[:2] == ["--no-deps", "-r"] and len(args) == 3, (
                f"{stage.name}: {venv}: `pip install --no-deps -r requirements/<role>.txt`, "
                f"no package named by hand (got {' '.join(args)})"
            )
            requirements_file(stage, args[2])  # copied from requirements/


def requirements_file(stage: Stage, installed: str) -> Path:
    """The repository file behind the path a stage's pip installs from."""
    for line in stage.lines:
        words = line.split()
        if words[0] == "COPY" and not words[1].startswith("--"):
            for source in words[1:-1]:
                if source.startswith("requirements/") and Path(source).name == Path(installed).name:
                    return REPO_ROOT / source
    raise AssertionError(f"{stage.name}: {installed} is not COPYed from requirements/")


# --- each image's dependency set, alone -----------------------------------------------------------


@dataclass
class Image:
    """A virtual environment as a stage runs it: its requirements, code and commands."""

    id: str
    requirements: Path
    copies: list[tuple[list[str], str]]  # (sources in the repository, destination)
    workdir: str
    commands: list[list[str]] = field(default_factory=list)
    serving: bool = True


def _exec_form(line: str) -> list[str] | None:
    match = re.search(r"\bCMD (\[.*\])\s*$", line)
    return json.loads(match.group(1)) if match else None


def code_copies(stage: Stage, until: int | None = None) -> list[tuple[list[str], str]]:
    copies = []
    for line in stage.lines[:until]:
        words = line.split()
        if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            if not all(s.startswith("requirements/") for s in sources):
                copies.append((sources, words[-1]))
    return copies


def _compose_runs(dockerfile: Path) -> dict[str | None, list[list[str]]]:
    """Commands compose runs per target (None: the last stage), healthchecks included."""
    runs: dict[str | None, list[list[str]]] = {}
    for compose in COMPOSE_FILES:
        for service in yaml.safe_load(compose.read_text())["services"].values():
            build = service.get("build")
            if not isinstance(build, dict):
                continue
            built = (
                compose.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            )
            if built.resolve() != dockerfile.resolve():
                continue
            commands = runs.setdefault(build.get("target"), [])
            if isinstance(service.get("command"), list):
                # With compose's substitution, defaults taken (`--workers ${..._WORKERS:-2}`).
                commands.append([interpolate(arg, {}) for arg in service["command"]])
            if any(key.endswith("_GRPC_ADDRESS") for key in service.get("environment") or {}):
                # The model server imports its gRPC service only when it serves one.
                commands.append(["python", "-c", "import shared.open_inference_grpc"])
            test = (service.get("healthcheck") or {}).get("test") or []
            if test[:1] == ["CMD"]:
                commands.append(test[1:])
            elif test[:1] == ["CMD-SHELL"]:
                commands.append(shlex.split(test[1]))
    return runs


def images() -> list[Image]:
    found = []
    for dockerfile in DOCKERFILES:
        name = str(dockerfile.relative_to(REPO_ROOT))
        all_stages = stages(dockerfile)
        by_name = {s.name: s for s in all_stages}
        runs = _compose_runs(dockerfile) or {None: []}
        for target, commands in runs.items():
            stage = by_name[target] if target else all_stages[-1]
            venv_copy = next(
                ln.split()
                for ln in stage.lines
                if ln.startswith("COPY --from=") and re.search(r" /opt/\w+ ", ln)
            )
            source, venv = by_name[venv_copy[1].removeprefix("--from=")], venv_copy[2]
            args = dict(pip_installs(source))[venv]
            own = [c for ln in stage.lines if (c := _exec_form(ln))]  # CMD and HEALTHCHECK
            requirements = requirements_file(source, args[-1])
            found.append(
                Image(
                    f"{name}:{stage.name}" if target else name,
                    requirements,
                    code_copies(stage),
                    stage.workdir,
                    list(map(list, dict.fromkeys(map(tuple, own + commands)))),  # once each
                    # The training patterns' images (a job, a pipeline, an MLflow server) are
                    # built from the trainer role; every other image serves.
                    serving=requirements.stem not in TRAINING_ROLES,
                )
            )
        # Build stages that run Python from a venv they install (training and export).
        for stage in all_stages:
            for i, line in enumerate(stage.lines):
                for venv, module in re.findall(r"^RUN (/\S+)/bin/python -m (\S+)", line):
                    args = dict(pip_installs(stage))[venv]
                    found.append(
                        Image(
                            f"{name}:{stage.name}",
                            requirements_file(stage, args[-1]),
                            code_copies(stage, until=i),
                            stage.workdir,
                            [["python", "-m", module]],
                            serving=False,
                        )
                    )
    return dedupe(found)


def dedupe(found: list[Image]) -> list[Image]:
    """One check for stages that would run the same check (the same training stage in each
    Dockerfile): their ids joined."""
    merged: dict[str, Image] = {}
    for image in found:
        key = repr((image.requirements, image.copies, image.workdir, image.commands, image.serving))
        if key in merged:
            merged[key].id += f", {image.id}"
        else:
            merged[key] = image
    return list(merged.values())


IMAGES = images()

# Run inside the fresh venv: import what each command runs, report what fails, one per line.
CHECK = r"""
import ast, importlib, importlib.util, json, sys, traceback
spec = json.loads(sys.argv[1])
failures = []
def attempt(what, call):
    try:
        call()
    except BaseException:
        failures.append(what + ": " + traceback.format_exc(limit=-3).strip())
def load_uvicorn(args):
    import uvicorn.main
    from uvicorn.config import Config
    # The command line parsed by uvicorn's own (click) command; the package's `main` shadows it.
    params = sys.modules["uvicorn.main"].main.make_context("uvicorn", list(args)).params
    Config(
        app=params["app"], factory=params["factory"], http=params["http"], ws=params["ws"],
        lifespan=params["lifespan"], interface=params["interface"], loop=params["loop"],
    ).load()
for command in spec["commands"]:
    exe, args = command[0], command[1:]
    if exe == "uvicorn":
        attempt(" ".join(command), lambda: load_uvicorn(args))
    elif exe == "python" and args[:1] == ["-m"]:
        attempt(" ".join(command), lambda: importlib.import_module(args[1]))
    elif exe == "python" and args[:1] == ["-c"]:
        for node in ast.walk(ast.parse(args[1])):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in names:
                attempt("python -c: import " + module, lambda: importlib.import_module(module))
    else:
        failures.append(f"{exe}: the image test does not know how to check this command")
for module in spec["forbidden"]:
    if importlib.util.find_spec(module) is not None:
        failures.append(f"training library {module} is importable in a serving image")
print(json.dumps(failures))
"""


def fresh_venv(requirements: Path) -> Path:
    """A venv holding exactly `requirements`, built once per file content and interpreter."""
    key = hashlib.sha256(
        "\n".join([VENV_LAYOUT, sys.version, sys.platform, requirements.read_text()]).encode()
    ).hexdigest()[:16]
    venv = VENV_CACHE / f"{requirements.stem}-{key}"
    if (venv / ".complete").exists():
        return venv
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    # Parallel workers (and other checkouts) may want the same venv: one builds, the rest wait.
    with open(VENV_CACHE / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            uv = find_uv_bin()
            base = getattr(sys, "_base_executable", sys.executable)
            python, file = str(venv / "bin" / "python"), str(requirements)
            for command in (
                [uv, "venv", "--quiet", "--python", base, str(venv)],
                [uv, "pip", "install", "--quiet", "--no-deps", "--python", python, "-r", file],
                [uv, "pip", "check", "--quiet", "--python", python],
            ):
                result = subprocess.run(command, capture_output=True, text=True)
                assert result.returncode == 0, f"{' '.join(command[1:3])}: {result.stderr}"
            (venv / ".complete").touch()
    return venv


def code_tree(image: Image, root: Path) -> Path:
    """The repository files the stage copies, laid out under its WORKDIR as the image has them."""
    workdir = root / image.workdir.lstrip("/")
    ignore = shutil.ignore_patterns("tests", "__pycache__", "*.pyc")  # as .dockerignore
    for sources, destination in image.copies:
        target = workdir / destination
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            else:
                (target if destination.endswith("/") else target.parent).mkdir(
                    parents=True, exist_ok=True
                )
                shutil.copy(path, target / path.name if destination.endswith("/") else target)
    return workdir


def test_every_image_is_checked() -> None:
    # Each compose service built from a Dockerfile is among the images checked below.
    assert len({i.id for i in IMAGES}) == len(IMAGES)
    checked = {part.split(":")[0] for i in IMAGES for part in i.id.split(", ")}
    assert {str(d.relative_to(REPO_ROOT)) for d in DOCKERFILES} <= checked


@pytest.mark.images
@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.id)
def test_image_dependency_set_alone_runs_what_the_image_runs(image: Image, tmp_path: Path) -> None:
    venv = fresh_venv(image.requirements)
    workdir = code_tree(image, tmp_path)
    spec = {
        "commands": image.commands,
        "forbidden": TRAINING_LIBRARIES if image.serving else [],
    }
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(workdir),
        "HOME": str(tmp_path),
    }

    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, json.dumps(spec)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    failures = json.loads(result.stdout.splitlines()[-1])
    assert not failures, f"with only {image.requirements.name}:\n" + "\n".join(failures)
    for command in image.commands:
        assert (venv / "bin" / command[0]).exists(), f"{command[0]} is not in the image's venv"
