"""Local mode: compose's substitution and address rules, and the processes it leaves behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from shared.catalogue import find
from shared.localmode import (
    REPO_ROOT,
    AddressBook,
    LocalModeError,
    dockerfile_instruction,
    interpolate,
    load_compose,
    start_order,
)
from shared.testing import wait_until


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${PORT:-8000}", "8000"),
        ("${SET:-x}", "set"),
        ("${EMPTY:-x}", "x"),
        ("${EMPTY-x}", ""),
        ("${UNSET-x}", "x"),
        ("$SET/$$HOME", "set/$HOME"),
    ],
)
def test_interpolate_follows_compose_rules(text: str, expected: str) -> None:
    assert interpolate(text, {"SET": "set", "EMPTY": ""}) == expected


def test_interpolate_refuses_a_missing_required_variable() -> None:
    with pytest.raises(LocalModeError, match="NEEDED is required: set it"):
        interpolate("${NEEDED:?set it}", {})


def test_translate_maps_service_hosts_own_ports_and_databases() -> None:
    book = AddressBook(
        ports={"api": {8000: 18000}, "predictor": {8001: 18001}},
        urls={"redis": "redis://127.0.0.1:6390", "postgres": "postgresql://u@127.0.0.1:5432/test"},
    )

    assert (
        book.translate("http://predictor:8001/predict", "api") == "http://127.0.0.1:18001/predict"
    )
    assert book.translate("8000", "api") == "18000"
    assert book.translate("8001", "api") == "8001"  # another service's port is not ours to move
    assert book.translate("http://localhost:8000/ready", "api") == "http://127.0.0.1:18000/ready"
    assert book.translate("0.0.0.0", "api") == "127.0.0.1"
    assert book.translate("redis://redis:6379/2", "api") == "redis://127.0.0.1:6390/2"
    assert (
        book.translate("postgresql+psycopg://p:p@postgres:5432/batch", "api")
        == "postgresql+psycopg://u@127.0.0.1:5432/test"
    )
    assert book.translate("ratio 3:2 at noon", "api") == "ratio 3:2 at noon"


def test_compose_services_start_after_their_dependencies(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        """
services:
  proxy:
    build: .
    command: ["run", "proxy"]
    depends_on:
      worker: {condition: service_healthy}
      redis: {condition: service_healthy}
  worker:
    build: .
    command: "run worker --port ${WORKER_PORT:-9000}"
    deploy: {replicas: 2}
    depends_on: [redis]
  redis:
    image: redis:7.4-alpine
"""
    )
    services = load_compose(tmp_path / "compose.yaml", {"WORKER_PORT": "9100"})

    assert start_order(services) == ["redis", "worker", "proxy"]
    assert services["worker"].command == ["run", "worker", "--port", "9100"]
    assert services["worker"].replicas == 2
    assert services["proxy"].depends_on == {"worker": "service_healthy", "redis": "service_healthy"}


def test_compose_without_command_runs_the_dockerfiles_cmd(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        'FROM python:3.11-slim\nHEALTHCHECK --interval=5s \\\n  CMD ["python", "probe.py"]\n'
        'CMD ["uvicorn", "app:app", "--port", "8000"]\n'
    )
    (tmp_path / "compose.yaml").write_text(
        "services:\n  api:\n    build: .\n    expose: ['8000']\n"
    )

    service = load_compose(tmp_path / "compose.yaml", {})["api"]

    assert dockerfile_instruction(tmp_path / "Dockerfile", "HEALTHCHECK") == ["python", "probe.py"]
    assert service.command == ["uvicorn", "app:app", "--port", "8000"]
    assert service.healthcheck == ["python", "probe.py"]
    assert service.ports == {8000: 8000}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_make_run_stops_every_process_it_started_gracefully_on_ctrl_c_or_hangup(sig: int) -> None:
    port = 18000 + (os.getpid() + sig) % 1000
    run = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "run", "web-single", "--local"],
        cwd=REPO_ROOT,
        env={**os.environ, "WEB_SINGLE_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{port}/ready"), timeout=60, what="web single up"
        )
        children = _children(run.pid)
        assert children, "make run started no service process"

        os.killpg(run.pid, sig)
        output, _ = run.communicate(timeout=30)
        assert run.returncode == 0
        # Stopped by local mode, not killed when it exited (the kernel's SIGKILL logs nothing).
        assert "Application shutdown complete" in output

        wait_until(
            lambda: not any(_alive(pid) for pid in children), timeout=10, what="no leftovers"
        )
        assert not _answers(f"http://127.0.0.1:{port}/health")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)


def test_an_unknown_pattern_lists_the_catalogue_and_fails() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", "no-such-pattern"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "PATTERN=no-such-pattern is not a pattern" in result.stderr
    assert "web-single" in result.stdout


def test_a_pattern_is_also_named_by_its_folder_so_a_copy_runs_without_the_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO_ROOT / "serving_patterns")
    by_name = find("web_single")  # a bare name is a catalogue name, wherever make runs
    by_path = find("web_single/")
    monkeypatch.setattr("shared.catalogue.entries", lambda: pytest.fail("catalogue read"))

    assert by_name is not None and by_name.id == "1.1"
    assert by_path == find("./web_single")
    assert by_path is not None and by_path.folder == "serving_patterns/web_single"
    assert by_path.implemented


def _answers(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead, it only waits for its parent to read its exit code.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_wait_until_gives_up_with_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="waiting for the moon"):
        wait_until(lambda: False, timeout=0.2, what="the moon")
    assert time.monotonic() - started < 2


def test_list_shows_every_catalogue_entry_with_folder_and_status() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "list"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    lines = result.stdout.splitlines()

    assert result.returncode == 0
    assert len(lines) == 35
    assert lines[0].split()[:4] == ["1.1", "serving", "web-single", "implemented"]
    assert all(line.split()[3] in ("implemented", "planned") for line in lines)
