"""Local mode: compose's substitution and address rules, restart policies, and the processes it
leaves behind."""

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from shared.catalogue import find
from shared.localmode import (
    REPO_ROOT,
    AddressBook,
    LocalModeError,
    LocalPattern,
    NoPostgres,
    RestartPolicy,
    dockerfile_instruction,
    envsubst,
    interpolate,
    load_compose,
    nginx_binary,
    restart_delay,
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


# --- restart policies ------------------------------------------------------------------------

# A service that notes each start in $RUNS (a time stamp a line), says "up PID", then exits with
# $CODE, or runs until it is stopped when there is none.
SERVICE = """
import os, sys, time
with open(os.environ["RUNS"], "a") as runs:
    print(time.time(), file=runs)
print("up", os.getpid(), flush=True)
sys.exit(int(os.environ["CODE"])) if "CODE" in os.environ else time.sleep(60)
"""


def _service(folder: Path, name: str, code: int | None = None, **spec: Any) -> dict[str, Any]:
    environment = {"RUNS": str(folder / f"{name}.runs")}
    if code is not None:
        environment["CODE"] = str(code)
    return {"build": ".", "command": ["python", "-c", SERVICE], "environment": environment, **spec}


def _pattern(folder: Path, **services: dict[str, Any]) -> LocalPattern:
    (folder / "compose.yaml").write_text(yaml.safe_dump({"services": services}))
    return LocalPattern(folder, variables={}, echo=io.StringIO(), build=False)


def _runs(folder: Path, name: str) -> list[float]:
    runs = folder / f"{name}.runs"
    return [float(line) for line in runs.read_text().split()] if runs.exists() else []


def _exit_lines(text: str) -> list[str]:
    """The lines local mode prints about exits, spaces squeezed."""
    return [" ".join(line.split()) for line in text.splitlines() if "| local mode: " in line]


def _echoed(pattern: LocalPattern) -> str:
    assert isinstance(pattern.echo, io.StringIO)
    return pattern.echo.getvalue()


def test_restart_policies_are_read_as_docker_compose_reads_them(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        """
services:
  plain: {build: ., command: run}
  retries: {build: ., command: run, restart: "on-failure:3"}
  unquoted: {build: ., command: run, restart: no}
  unless: {build: ., command: run, restart: unless-stopped}
  deploy_wins:
    build: .
    command: run
    restart: always
    deploy: {restart_policy: {condition: on-failure, max_attempts: 2, delay: 5s}}
  deploy_default: {build: ., command: run, deploy: {restart_policy: {}}}
  deploy_none: {build: ., command: run, deploy: {restart_policy: {condition: none}}}
"""
    )

    services = load_compose(tmp_path / "compose.yaml", {})

    assert {name: str(s.restart) for name, s in services.items()} == {
        "plain": "no",
        "retries": "on-failure:3",
        "unquoted": "no",
        "unless": "unless-stopped",
        "deploy_wins": "on-failure:2",
        "deploy_default": "always",  # compose's default condition is any
        "deploy_none": "no",
    }


@pytest.mark.parametrize("restart", ["always:3", "sometimes", "on-failure:x"])
def test_a_restart_policy_docker_refuses_is_refused(restart: str) -> None:
    with pytest.raises(LocalModeError, match="service api: .*restart|retry count"):
        RestartPolicy.from_compose("api", {"restart": restart})


def test_restart_delay_doubles_from_100_ms_up_to_a_minute_and_resets_after_10_s() -> None:
    delays = [0.0]
    for _ in range(12):
        delays.append(restart_delay(delays[-1], ran_for=1.0))

    assert delays[1:5] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays[-2:] == [60.0, 60.0]
    assert restart_delay(60.0, ran_for=10.0) == pytest.approx(0.1)


def test_a_replica_killed_9_with_restart_on_failure_comes_back_and_the_exit_is_printed(
    tmp_path: Path,
) -> None:
    worker = _service(tmp_path, "worker", restart="on-failure", deploy={"replicas": 2})
    with _pattern(tmp_path, worker=worker) as pattern:
        first, other = pattern.processes["worker"]
        wait_until(lambda: len(_runs(tmp_path, "worker")) == 2, timeout=10, what="both up")
        os.kill(first.pid, signal.SIGKILL)  # from outside, as the OOM killer does
        again = wait_until(
            lambda: pattern.processes["worker"][0] if len(_runs(tmp_path, "worker")) == 3 else None,
            timeout=10,
            what="worker-1 restarted",
        )
        exits = _exit_lines(_echoed(pattern))
        # The new run's first line reaches the kept output when its reader thread reads it.
        worker_1_output = wait_until(
            lambda: out if len((out := first.output()).splitlines()) == 3 else None,
            timeout=10,
            what="the restarted run's output",
        )

        assert again is not first and again.alive()
        assert again.env["HOSTNAME"] == "worker-1"  # the same replica, as Docker restarts it
        assert pattern.processes["worker"][1] is other and other.alive()  # on its own
    assert exits == ["worker-1 | local mode: killed by SIGKILL; restarting in 0.1 s (attempt 1)"]
    assert [ln.split()[0] for ln in worker_1_output.splitlines()] == ["up", "local", "up"]


def test_a_replica_without_a_restart_policy_is_reported_dead_and_stays_down(
    tmp_path: Path,
) -> None:
    with _pattern(tmp_path, worker=_service(tmp_path, "worker")) as pattern:
        process = pattern.processes["worker"][0]
        wait_until(lambda: _runs(tmp_path, "worker"), timeout=10, what="worker up")
        os.kill(process.pid, signal.SIGKILL)
        code = pattern.wait(timeout=10)  # returns once no restart is due

        assert pattern.processes["worker"][0] is process
    assert code == 9
    assert _exit_lines(_echoed(pattern)) == [
        "worker-1 | local mode: killed by SIGKILL; not restarted: restart policy is no"
    ]
    assert len(_runs(tmp_path, "worker")) == 1


def test_restart_backoff_doubles_and_on_failure_gives_up_after_its_max_retries(
    tmp_path: Path,
) -> None:
    with _pattern(tmp_path, job=_service(tmp_path, "job", code=3, restart="on-failure:3")) as p:
        code = p.wait(timeout=30)

    runs = _runs(tmp_path, "job")
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    assert code == 3
    assert len(runs) == 4  # the first run and three restarts
    assert all(gap >= delay for gap, delay in zip(gaps, [0.1, 0.2, 0.4], strict=True))
    assert _exit_lines(_echoed(p)) == [
        "job-1 | local mode: exited with code 3; restarting in 0.1 s (attempt 1)",
        "job-1 | local mode: exited with code 3; restarting in 0.2 s (attempt 2)",
        "job-1 | local mode: exited with code 3; restarting in 0.4 s (attempt 3)",
        "job-1 | local mode: exited with code 3; gave up after 3 attempts (restart: on-failure:3)",
    ]


def test_on_failure_leaves_a_success_alone_and_a_one_shot_job_completes(tmp_path: Path) -> None:
    seed = _service(tmp_path, "seed", code=0)
    worker = _service(
        tmp_path,
        "worker",
        code=0,
        restart="on-failure",
        depends_on={"seed": {"condition": "service_completed_successfully"}},
    )
    with _pattern(tmp_path, seed=seed, worker=worker) as pattern:
        code = pattern.wait(timeout=20)

    assert code == 0
    assert _exit_lines(_echoed(pattern)) == [
        "seed-1 | local mode: exited with code 0; completed, as a one-shot job others wait for",
        "worker-1 | local mode: exited with code 0; not restarted: it succeeded and restart "
        "policy is on-failure",
    ]


def test_kill_ends_a_replica_for_good_whatever_its_restart_policy(tmp_path: Path) -> None:
    with _pattern(tmp_path, worker=_service(tmp_path, "worker", restart="always")) as pattern:
        process = pattern.processes["worker"][0]
        pattern.kill("worker")  # as docker kill: the test means it to stay down
        code = pattern.wait(timeout=10)

        assert pattern.processes["worker"][0] is process
    assert code == 9
    assert _exit_lines(_echoed(pattern)) == [
        "worker-1 | local mode: killed by SIGKILL; not restarted: kill() ends a replica for "
        "good, as docker kill"
    ]


def test_stop_during_a_restart_backoff_cancels_the_restart(tmp_path: Path) -> None:
    pattern = _pattern(tmp_path, job=_service(tmp_path, "job", code=3, restart="on-failure"))
    try:
        pattern.start()
        # The fifth restart waits 1.6 s: time enough to stop in the middle of it.
        wait_until(
            lambda: "restarting in 1.6 s (attempt 5)" in _echoed(pattern),
            timeout=20,
            what="the fifth back-off",
        )
    finally:
        pattern.stop()

    assert len(_runs(tmp_path, "job")) == 5
    assert _exit_lines(_echoed(pattern))[-1] == (
        "job-1 | local mode: restart cancelled, local mode is stopping"
    )
    assert pattern.wait(timeout=1) == 3  # nothing left to run or to restart


# `make run` (shared.cli.run) on a compose file of the test's own, without training any model.
MAKE_RUN = """
import sys
from shared import cli, localmode
from shared.catalogue import Entry
localmode.LocalPattern._build = lambda self: None
sys.exit(cli.run(Entry("", "Test", sys.argv[1], (), ""), local=True, port_offset=0))
"""


def _make_run(folder: Path) -> tuple["subprocess.Popen[bytes]", Path]:
    log = folder / "make-run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, "-c", MAKE_RUN, str(folder)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return run, log


def test_ctrl_c_during_a_restart_backoff_stops_make_run_without_a_restart(tmp_path: Path) -> None:
    _pattern(tmp_path, job=_service(tmp_path, "job", code=3, restart="on-failure"))
    run, log = _make_run(tmp_path)
    try:
        wait_until(
            lambda: "restarting in 1.6 s (attempt 5)" in log.read_text(),
            timeout=30,
            what="the fifth back-off",
        )
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(timeout=20) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)

    assert len(_runs(tmp_path, "job")) == 5
    assert _exit_lines(log.read_text())[-1] == (
        "job-1 | local mode: restart cancelled, local mode is stopping"
    )


def test_make_run_of_a_pattern_publishing_no_port_says_so_when_it_is_up(tmp_path: Path) -> None:
    _pattern(tmp_path, job=_service(tmp_path, "job"))
    run, log = _make_run(tmp_path)
    try:
        wait_until(lambda: " is up: " in log.read_text(), timeout=30, what="the up line")
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(timeout=20) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert "Test is up: no service publishes a port\n" in log.read_text()


def test_kill_9_of_make_run_leaves_no_service_running_not_even_a_restarted_one(
    tmp_path: Path,
) -> None:
    _pattern(
        tmp_path, worker=_service(tmp_path, "worker", restart="always", deploy={"replicas": 2})
    )
    run, log = _make_run(tmp_path)

    def pids() -> list[int]:
        return [int(line.split()[-1]) for line in log.read_text().splitlines() if "| up " in line]

    try:
        first, second = wait_until(
            lambda: pids() if len(pids()) == 2 else None, timeout=30, what="2 up"
        )
        os.kill(first, signal.SIGKILL)
        # Started again by local mode's supervisor thread, not by its main thread.
        restarted = wait_until(
            lambda: pids()[2] if len(pids()) == 3 else None, timeout=10, what="restart"
        )

        os.killpg(run.pid, signal.SIGKILL)  # local mode only: the services have their own groups
        run.wait(timeout=10)

        wait_until(
            lambda: not _alive(second) and not _alive(restarted), timeout=10, what="no leftovers"
        )
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)


# --- profiles and nginx images -----------------------------------------------------------------


def test_a_service_with_profiles_runs_only_when_compose_profiles_names_one(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        """
services:
  api:
    build: .
    command: ["run"]
  nginx:
    image: nginx:1.22.1-alpine
    profiles: ["nginx", "edge"]
  debug:
    build: .
    command: ["run"]
    profiles: ["debug"]
"""
    )

    def names(profiles: str | None) -> set[str]:
        variables = {} if profiles is None else {"COMPOSE_PROFILES": profiles}
        return set(load_compose(tmp_path / "compose.yaml", variables))

    assert names(None) == {"api"}
    assert names("edge") == {"api", "nginx"}
    assert names("nginx, debug") == {"api", "nginx", "debug"}
    assert names("*") == {"api", "nginx", "debug"}


def test_envsubst_replaces_only_the_variables_it_is_given_as_the_nginx_image_does() -> None:
    template = "listen ${PORT}; return 200 '$host $PORT ${UNSET} $$ $1 ${PORT}x';"

    assert envsubst(template, {"PORT": "9000"}) == (
        "listen 9000; return 200 '$host 9000 ${UNSET} $$ $1 9000x';"
    )


def test_bind_mounts_are_read_in_short_and_long_syntax(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        """
services:
  nginx:
    image: nginx:1.22.1-alpine
    volumes:
      - ./conf/site.conf.template:/etc/nginx/templates/site.conf.template:ro
      - type: bind
        source: ./extra
        target: /etc/nginx/conf.d/extra
      - cache:/var/cache/nginx
"""
    )

    service = load_compose(tmp_path / "compose.yaml", {})["nginx"]

    assert service.mounts == [
        (tmp_path / "conf" / "site.conf.template", "/etc/nginx/templates/site.conf.template"),
        (tmp_path / "extra", "/etc/nginx/conf.d/extra"),
    ]
    assert service.runs_here and not service.builds


NGINX_TEMPLATE = """
server {
    listen ${SITE_PORT};
    location = /hello {
        default_type text/plain;
        return 200 "hello from ${SITE_NAME} via $server_protocol to ${UPSTREAM}\n";
    }
}
"""


@pytest.mark.skipif(nginx_binary() is None, reason="no nginx on this machine")
def test_an_nginx_image_service_runs_with_the_machines_nginx_and_its_rendered_template(
    tmp_path: Path,
) -> None:
    (tmp_path / "site.conf.template").write_text(NGINX_TEMPLATE)
    (tmp_path / "compose.yaml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "api": {"build": ".", "command": ["python", "-c", "pass"], "expose": ["8000"]},
                    "nginx": {
                        "image": "nginx:1.22.1-alpine",
                        "ports": ["8088:8080"],
                        "volumes": ["./site.conf.template:/etc/nginx/templates/site.conf.template"],
                        "environment": {
                            "SITE_PORT": "8080",
                            "SITE_NAME": "${NAME:-test}",
                            "UPSTREAM": "http://api:8000",
                        },
                    },
                }
            }
        )
    )
    pattern = LocalPattern(tmp_path, ports="free", variables={}, echo=io.StringIO(), build=False)
    with pattern:
        port = pattern.addresses.ports["nginx"][8080]
        api = pattern.addresses.ports["api"][8000]
        hello = httpx2.get(f"{pattern.url('nginx')}/hello")
        directory = Path(pattern.servers["nginx"].dir)
        files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.conf"))

    assert port != 8080  # moved, as every port of a run on free ports
    assert hello.status_code == 200
    # The compose variables, the address translated; nginx's own $variable left to nginx.
    assert hello.text == f"hello from test via HTTP/1.1 to http://127.0.0.1:{api}\n"
    assert files == ["conf.d/site.conf", "nginx.conf"]
    assert not directory.exists()  # pid, logs and temporary files went with it
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{port}/hello", timeout=2)


@pytest.mark.skipif(nginx_binary() is None, reason="no nginx on this machine")
def test_an_nginx_configuration_that_does_not_start_is_an_error_with_nginxs_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "bad.conf.template").write_text("server { listen ${PORT}; nonsense on; }\n")
    (tmp_path / "compose.yaml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "nginx": {
                        "image": "nginx:1.22.1-alpine",
                        "ports": ["8088:8080"],
                        "volumes": ["./bad.conf.template:/etc/nginx/templates/bad.conf.template"],
                        "environment": {"PORT": "8080"},
                    }
                }
            }
        )
    )
    pattern = LocalPattern(tmp_path, ports="free", variables={}, echo=io.StringIO(), build=False)

    with pytest.raises(LocalModeError, match='unknown directive "nonsense"'), pattern:
        pass


def test_the_machines_postgresql_serves_the_database_the_compose_file_names(
    tmp_path: Path,
) -> None:
    # As the image makes POSTGRES_DB on its first start: each pattern's tables in a database of
    # their own on the machine's server, not all in `postgres`.
    psycopg = pytest.importorskip("psycopg")
    name = f"localmode_{uuid.uuid4().hex[:12]}"
    postgres = {"image": "postgres:16.4-alpine", "environment": {"POSTGRES_DB": name}}
    api = {
        "build": ".",
        "command": ["python", "-c", "import time; time.sleep(60)"],
        "environment": {"DATABASE_URL": f"postgresql+psycopg://p:p@postgres:5432/{name}"},
        "depends_on": {"postgres": {"condition": "service_started"}},
    }
    pattern = _pattern(tmp_path, postgres=postgres, api=api)
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        pattern.start()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    try:
        given = pattern.processes["api"][0].env["DATABASE_URL"]
        with psycopg.connect(admin, autocommit=True) as connection:
            made = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert made.fetchone() == (1,)
    finally:
        pattern.stop()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert given == f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
