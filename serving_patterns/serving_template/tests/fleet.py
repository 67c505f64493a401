"""The serving template's test bench: a versioned template repository, services generated from
it with copier, and each generated service started for real, as its Dockerfile starts it.

In a platform team the template is a repository of its own whose git tags are its versions;
`template_repository` makes one in a temporary folder from the template in this pattern (v1)
and its next release (v2, `release_v2`), so that `copier copy` and `copier update` run exactly
as they would against the team's.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import httpx2
import yaml

from shared.testing import REPO_ROOT, free_port, wait_until

PATTERN = Path(__file__).resolve().parents[1]
TEMPLATE = PATTERN / "template"

# git without the machine's or the user's configuration: a fixed author, no signing.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_SYSTEM": os.devnull,
    "GIT_AUTHOR_NAME": "template tests",
    "GIT_AUTHOR_EMAIL": "template-tests@example.com",
    "GIT_COMMITTER_NAME": "template tests",
    "GIT_COMMITTER_EMAIL": "template-tests@example.com",
}


def git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args], cwd=folder, env={**os.environ, **GIT_ENV}, check=True, capture_output=True
    )


def commit_all(folder: Path, message: str) -> None:
    git(folder, "add", "-A")
    git(folder, "commit", "--quiet", "--allow-empty", "-m", message)


# v2, the template's next release: what its maintainers would ship. A new question with a
# default, so that every v1 config still answers it (the backward-compatible way to grow), and
# a route every service gains from it.
OWNER_QUESTION = """
owner:
  type: str
  help: "The team that runs the service (who gets paged)"
  default: ml-platform
"""
ABOUT_ROUTE = """
    @app.get("/about", tags=["service"])
    async def about() -> dict[str, str]:
        \"\"\"Who runs this service, and which template release generated it.\"\"\"
        template = "{{ _copier_answers._commit }}"
        return {"service": NAME, "owner": "{{ owner }}", "template": template}

"""


def release_v2(template: Path) -> None:
    with (template / "copier.yml").open("a") as questions:
        questions.write(OWNER_QUESTION)
    app = template / "{{ service }}" / "app.py.jinja"
    text = app.read_text()
    assert text.count("    return app\n") == 1, "the v2 change goes before create_app's return"
    app.write_text(text.replace("    return app\n", ABOUT_ROUTE + "    return app\n"))


def template_repository(folder: Path) -> Path:
    """A git repository of the template, tagged v1 (this pattern's template) and v2."""
    shutil.copytree(TEMPLATE, folder)
    git(folder, "init", "--quiet", "--initial-branch=main")
    commit_all(folder, "serving template v1")
    git(folder, "tag", "v1")
    release_v2(folder)
    commit_all(folder, "v2: every service says who owns it (GET /about)")
    git(folder, "tag", "v2")
    return folder


def answers_file(service: str) -> str:
    """One config per service: the fleet folder holds several."""
    return f".copier-answers.{service}.yml"


def generate(template: str | Path, fleet: Path, vcs_ref: str | None = None, **answers: str) -> Path:
    """`copier copy` of one service into the fleet folder: the service's package folder."""
    copier.run_copy(
        str(template),
        fleet,
        data=answers,
        answers_file=answers_file(answers["service"]),
        vcs_ref=vcs_ref,
        defaults=True,  # no prompt: what is not given takes the template's default
        overwrite=True,
        quiet=True,
    )
    return fleet / answers["service"]


def update(fleet: Path, service: str, vcs_ref: str | None = None) -> None:
    """`copier update` of one service: its config kept, new questions take their defaults."""
    copier.run_update(
        fleet,
        answers_file=answers_file(service),
        vcs_ref=vcs_ref,
        defaults=True,
        overwrite=True,
        quiet=True,
    )


def read_answers(fleet: Path, service: str) -> dict[str, Any]:
    answers: dict[str, Any] = yaml.safe_load((fleet / answers_file(service)).read_text())
    return answers


def dockerfile_command(dockerfile: Path) -> list[str]:
    """The exec-form CMD of a generated Dockerfile: how its image starts the service."""
    found = re.findall(r"^CMD (\[.*\])$", dockerfile.read_text(), re.M)
    command: list[str] = json.loads(found[-1])
    return command


@dataclass(frozen=True)
class Service:
    """A generated service, running: where it answers and what its model card says."""

    name: str
    url: str
    card: dict[str, Any]
    logs: Callable[[], str]  # what it has written to its output so far


def model_card(model: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((REPO_ROOT / "models" / model / "model.json").read_text())
    return card


@contextmanager
def serving(fleet: Path, service: str, log: Path) -> Iterator[Service]:
    """The generated service started with its Dockerfile's command, on a free loopback port, from
    the repository root (the shared library and models/, as the image has them)."""
    answers = read_answers(fleet, service)
    command = dockerfile_command(fleet / f"Dockerfile.{service}")
    assert command[0] == "uvicorn"
    port = free_port()
    args = [
        {"0.0.0.0": "127.0.0.1", "8000": str(port)}.get(arg, arg)
        for arg in command[1:]  # a container's address and port, made this machine's
    ]
    env = {**os.environ, "PYTHONPATH": f"{fleet.parent}{os.pathsep}{REPO_ROOT}"}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is None and _ready(url) or process.poll() is not None,
            timeout=60,
            what=f"{service} ready",
        )
        assert process.poll() is None, f"{service} exited:\n{log.read_text()}"
        yield Service(service, url, model_card(answers["model"]), log.read_text)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False
