"""The template itself: what it renders, what differs between services, and its versions."""

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from serving_patterns.serving_template.tests.fleet import (
    PATTERN,
    TEMPLATE,
    answers_file,
    commit_all,
    generate,
    git,
    read_answers,
    serving,
    update,
)
from shared.testing import REPO_ROOT

COMMITTED = ["iris", "digits"]


def rendered_files(fleet: Path, service: str) -> dict[str, str]:
    """What the template renders for one service: its package, its Dockerfile, its config."""
    paths = [fleet / answers_file(service), fleet / f"Dockerfile.{service}"]
    package = (fleet / service).rglob("*")
    paths += [p for p in package if p.is_file() and "__pycache__" not in p.parts]
    return {str(p.relative_to(fleet)): p.read_text() for p in sorted(paths)}


def config(fleet: Path, service: str) -> dict[str, str]:
    """A service's answers, without copier's own bookkeeping (_src_path, _commit)."""
    return {k: v for k, v in read_answers(fleet, service).items() if not k.startswith("_")}


@pytest.mark.parametrize("service", COMMITTED)
def test_committed_services_are_what_the_template_renders(service: str, tmp_path: Path) -> None:
    # The examples in this folder are regenerated from their configs, never edited by hand.
    generate(TEMPLATE, tmp_path, **config(PATTERN, service))
    fresh, committed = rendered_files(tmp_path, service), rendered_files(PATTERN, service)
    answers = answers_file(service)

    assert config(tmp_path, service) == config(PATTERN, service)
    fresh.pop(answers), committed.pop(answers)  # _src_path: where each was rendered from
    assert fresh == committed, (
        "run `copier recopy --defaults --overwrite -a "
        f"{answers} serving_patterns/serving_template` and commit"
    )


def test_generated_services_differ_only_by_their_config() -> None:
    def with_placeholders(service: str) -> dict[str, str]:
        """The service's files, each config value written as <its name>: the template's text."""
        answers = config(PATTERN, service)
        files = rendered_files(PATTERN, service)
        # Longest first: the env prefix holds the service name, not the other way round.
        for key, value in sorted(answers.items(), key=lambda kv: -len(kv[1])):
            files = {
                path.replace(value, f"<{key}>"): text.replace(value, f"<{key}>")
                for path, text in files.items()
            }
        return files

    iris, digits = with_placeholders("iris"), with_placeholders("digits")

    assert config(PATTERN, "iris") != config(PATTERN, "digits")
    assert iris == digits


def test_each_service_reads_only_its_own_environment_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serving_patterns.serving_template.digits.settings import Settings as DigitsSettings
    from serving_patterns.serving_template.iris.settings import Settings as IrisSettings

    monkeypatch.setenv("SERVING_TEMPLATE_IRIS_MAX_ROWS", "7")

    assert IrisSettings().max_rows == 7
    assert DigitsSettings().max_rows == 100
    assert IrisSettings().model_dir == "models/iris"
    assert DigitsSettings().model_dir == "models/digits"


@pytest.mark.parametrize("service", COMMITTED)
def test_a_generated_service_runs_without_copier_or_jinja(service: str) -> None:
    # Generating is dev time: the served image has neither (tests/test_dependencies.py builds
    # its environment alone); here the import of either is made to fail outright.
    module = f"serving_patterns.serving_template.{service}.app"
    code = (
        "import sys\n"
        "sys.modules.update(copier=None, jinja2=None)\n"
        f"from {module} import create_app\n"
        "create_app()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("answers", "problem"),
    [
        ({"service": "Iris-Service"}, "lower-case Python identifier"),
        ({"service": "iris", "description": 'The "best" model'}, "without double quotes"),
        ({"service": "iris", "package": "my-fleet"}, "a dotted Python path"),
    ],
)
def test_template_refuses_a_config_it_cannot_render(
    answers: dict[str, str], problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=problem):
        generate(TEMPLATE, tmp_path, **answers)

    assert not list(tmp_path.iterdir())  # nothing half-generated


@pytest.mark.e2e
def test_copier_update_moves_a_v1_service_to_v2_keeping_its_config(
    template_repo: Path, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    git(fleet, "init", "--quiet")
    generate(
        template_repo,
        fleet,
        "v1",
        service="digits",
        model="digits",
        package="fleet",
        description="Digits for the post room.",
    )
    commit_all(fleet, "digits from the template's v1")
    before = config(fleet, "digits")
    with serving(fleet, "digits", tmp_path / "v1.log") as v1:
        v1_about = httpx2.get(f"{v1.url}/about", timeout=10)

    update(fleet, "digits")  # to the newest release: v2
    with serving(fleet, "digits", tmp_path / "v2.log") as v2:
        v2_about = httpx2.get(f"{v2.url}/about", timeout=10)
        v2_metadata = httpx2.get(f"{v2.url}/metadata", timeout=10).json()

    assert v1_about.status_code == 404  # v1 had no such route
    assert read_answers(fleet, "digits")["_commit"] == "v2"
    # The v1 config is kept whole; the question v2 added takes its default.
    assert config(fleet, "digits") == {**before, "owner": "ml-platform"}
    assert v2_about.status_code == 200
    assert v2_about.json() == {"service": "digits", "owner": "ml-platform", "template": "v2"}
    assert v2_metadata["model_name"] == "digits"
