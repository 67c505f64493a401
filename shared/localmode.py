"""Local mode: run a pattern's compose.yaml as local processes, without Docker.

The compose file stays the single description of a pattern's services. Each service that compose
builds from this repository runs here as a process with the same command (compose's `command`, or
the Dockerfile's CMD), the same environment, and the same healthcheck, with these translations:

- compose service hostnames become 127.0.0.1 ("http://predictor:8001" -> "http://127.0.0.1:8001");
- every port can be moved (`ports="free"` picks free ports, an int adds an offset), and a value
  that is exactly one of a service's own ports, or "localhost:PORT", moves with it;
- "0.0.0.0" becomes "127.0.0.1": local mode does not listen on the network;
- services from public images come from the machine: Redis from REDIS_URL when it answers, else
  a private `redis-server` on a free port; PostgreSQL from DATABASE_URL (or 127.0.0.1:5432) when
  it answers; nginx is the machine's nginx, run with the templates the service mounts, rendered
  as the image renders them (NginxServer); otherwise a message saying what to install;
- a service with `profiles` runs only when COMPOSE_PROFILES names one (`docker compose
  --profile nginx up` is `COMPOSE_PROFILES=nginx`);
- "build" means `python -m shared.training ensure`: the models the Dockerfiles bake into images.

Services start in depends_on order, each waiting for its dependencies' conditions
(service_started, service_healthy, service_completed_successfully); `deploy.replicas` starts that
many copies. Output lines are prefixed with the service's name, as `docker compose up` does.

Restart policies are applied as the Docker engine applies them, to each replica on its own:
compose's `restart:` ("no", the default; "on-failure[:max-retries]"; "always"; "unless-stopped")
and `deploy.restart_policy` (condition none/on-failure/any and max_attempts, which `docker compose
up` maps onto the same policies and lets win over `restart:`; its delay and window are Swarm's,
ignored there and here). A restart waits Docker's back-off: 100 ms, doubled at each restart up to
a minute, back to 100 ms after a run of 10 s; max-retries counts restarts. The replica keeps its
name and environment (HOSTNAME too). "always" and "unless-stopped" differ only when the Docker
daemon restarts, which has no local equivalent. What local mode stops itself (Ctrl-C, stop(),
kill()) is never restarted, as after `docker stop` or `docker kill`; nor is the Redis it starts
(restart_infrastructure() restarts it on purpose). Every exit prints one line: the replica, its
exit code or signal, and what local mode does about it.

On Linux each process gets SIGKILL when local mode dies, even by kill -9: nothing is left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = "compose.yaml"
LOCALHOST = "127.0.0.1"


class LocalModeError(RuntimeError):
    """Something local mode cannot do; the message says what to do instead."""


class NoPostgres(LocalModeError):
    """The pattern needs PostgreSQL and none answers (the one server local mode cannot start)."""


# --- reading compose.yaml --------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        value = variables.get(name)
        op, arg = match.group("op"), match.group("arg")
        if op == ":-" and not value or op == "-" and value is None:
            return interpolate(arg, variables)
        if op in (":?", "?") and (value is None or op == ":?" and not value):
            raise LocalModeError(f"variable {name} is required: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def _as_args(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _as_env(environment: Mapping[str, Any] | list[str] | None) -> dict[str, str]:
    if environment is None:
        return {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def _port_pair(spec: str | int | dict[str, Any]) -> tuple[int, int]:
    """(container port, published port) of a compose `ports` entry."""
    if isinstance(spec, dict):
        return int(spec["target"]), int(spec.get("published") or spec["target"])
    parts = str(spec).split("/")[0].split(":")
    return int(parts[-1]), int(parts[-2] if len(parts) > 1 else parts[-1])


def _seconds(duration: str | None, default: float) -> float:
    """Compose durations such as 1m30s, 5s or 500ms."""
    if not duration:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|us|h|m|s)", duration))


# Docker's restart back-off (moby's restart manager): the first restart waits 100 ms, each next
# one twice the last, up to a minute; a run of 10 s or more starts again from 100 ms.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0


def restart_delay(previous: float, ran_for: float) -> float:
    """How long to wait before a restart, after a run of `ran_for` seconds that followed a wait
    of `previous` seconds (0: the replica's first restart)."""
    if previous == 0 or ran_for >= BACKOFF_RESET_AFTER:
        return BACKOFF_FIRST
    return min(previous * 2, BACKOFF_MAX)


@dataclass(frozen=True)
class RestartPolicy:
    """A service's restart policy, as the Docker engine has it."""

    name: str = "no"  # no, on-failure, always, unless-stopped
    max_retries: int = 0  # on-failure only; 0 is no limit, as in Docker

    NAMES = ("no", "on-failure", "always", "unless-stopped")

    @classmethod
    def from_compose(cls, service: str, spec: Mapping[str, Any]) -> RestartPolicy:
        deploy = (spec.get("deploy") or {}).get("restart_policy")
        if deploy is not None:  # mapped as `docker compose up` maps it; delay and window unused
            condition = str(deploy.get("condition", "any"))
            name = {"none": "no", "any": "always"}.get(condition, condition)
            count = str(deploy.get("max_attempts", 0))
        else:
            restart = spec.get("restart", "no")
            # An unquoted `restart: no` is YAML's false.
            name, _, count = ("no" if restart is False else str(restart)).partition(":")
        if name not in cls.NAMES or not (count or "0").isdigit():
            raise LocalModeError(
                f"service {service}: restart policy {name}{':' + count if count else ''} is not "
                f"one of {', '.join(cls.NAMES)} (on-failure may add :max-retries)"
            )
        if int(count or 0) and name != "on-failure":  # the Docker engine refuses it too
            raise LocalModeError(f"service {service}: a retry count goes only with on-failure")
        return cls(name, int(count or 0))

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def refusal(self, code: int, restarts: int) -> str | None:
        """Why a replica that exited with `code` after `restarts` restarts is not restarted, or
        None when it is."""
        if self.name == "no":
            return "not restarted: restart policy is no"
        if self.name == "on-failure" and code == 0:
            return "not restarted: it succeeded and restart policy is on-failure"
        if self.name == "on-failure" and self.max_retries and restarts >= self.max_retries:
            return (
                f"gave up after {restarts} attempt{'s' if restarts > 1 else ''} (restart: {self})"
            )
        return None


def dockerfile_instruction(dockerfile: Path, instruction: str) -> list[str]:
    """The exec-form arguments of the last CMD or HEALTHCHECK ... CMD of a Dockerfile."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found: list[str] = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].upper() == instruction:
            rest = words[1]
            if instruction == "HEALTHCHECK":
                rest = rest[rest.upper().find("CMD") + 3 :] if "CMD" in rest.upper() else ""
                rest = re.sub(r"^\s*", "", rest)
            with contextlib.suppress(json.JSONDecodeError):
                found = json.loads(rest)
    return found


@dataclass
class Service:
    name: str
    image: str | None
    command: list[str]
    environment: dict[str, str]
    ports: dict[int, int]  # container port -> published port (itself for `expose`)
    published: bool  # an entry service: compose publishes its port to the host
    healthcheck: list[str]
    health_timeout: float
    health_deadline: float
    depends_on: dict[str, str]
    replicas: int
    restart: RestartPolicy
    mounts: list[tuple[Path, str]] = field(default_factory=list)  # bind mounts: host, container

    @property
    def builds(self) -> bool:
        return self.image is None

    @property
    def runs_here(self) -> bool:
        """A process of the pattern: built from this repository, or a public image that local
        mode runs with the machine's own program (nginx). Either has ports of its own."""
        return self.builds or _image_name(self.image).startswith(PROGRAM_IMAGES)


# Public images local mode runs as a process of the pattern, with the machine's program and the
# configuration the compose file mounts; Redis and PostgreSQL are servers it finds (or starts)
# instead, reached by URL.
PROGRAM_IMAGES = ("nginx",)


def _image_name(image: str | None) -> str:
    return (image or "").split("/")[-1]


def _active(spec: Mapping[str, Any], variables: Mapping[str, str]) -> bool:
    """Whether compose starts the service: one without profiles always, one with profiles only
    when COMPOSE_PROFILES (as `docker compose --profile` sets it) names one of them, or is *."""
    profiles = spec.get("profiles")
    if not profiles:
        return True
    active = {p.strip() for p in variables.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    return "*" in active or bool(active & set(profiles))


def _bind_mounts(base: Path, volumes: list[Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount (short or long syntax); named volumes
    are left out."""
    mounts = []
    for volume in volumes:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
            if volume.get("type", "volume") != "bind":
                continue
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
        if source.startswith((".", "/", "~")) and target:
            mounts.append(((base / Path(source).expanduser()).resolve(), target))
    return mounts


def load_compose(path: Path, variables: Mapping[str, str]) -> dict[str, Service]:
    raw = _interpolate_tree(yaml.safe_load(path.read_text()), variables)
    services: dict[str, Service] = {}
    for name, spec in raw["services"].items():
        if not _active(spec, variables):
            continue
        build = spec.get("build")
        image = None if build else spec.get("image")
        if build is None and image is None:
            raise LocalModeError(f"service {name} has neither build nor image")
        command = _as_args(spec.get("command"))
        health = spec.get("healthcheck") or {}
        test = health.get("test", [])
        dockerfile = None
        if build:
            context = path.parent / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            command = command or dockerfile_instruction(dockerfile, "CMD")
            if not test and dockerfile.exists():
                test = ["CMD", *dockerfile_instruction(dockerfile, "HEALTHCHECK")]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if test and test[0] == "CMD-SHELL":
            test = ["sh", "-c", test[1]]
        elif test and test[0] == "CMD":
            test = test[1:]
        elif test and test[0] == "NONE":
            test = []
        if build and not command:
            raise LocalModeError(
                f"service {name}: no command in compose and no CMD in {dockerfile}"
            )
        depends = spec.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        ports = {
            int(str(p).split("/")[0]): int(str(p).split("/")[0]) for p in spec.get("expose", [])
        }
        ports.update(_port_pair(p) for p in spec.get("ports", []))
        interval = _seconds(health.get("interval"), 30.0)
        services[name] = Service(
            name=name,
            image=image,
            command=command,
            environment=_as_env(spec.get("environment")),
            ports=ports,
            published=bool(spec.get("ports")),
            healthcheck=list(test),
            health_timeout=_seconds(health.get("timeout"), 30.0),
            # Compose gives up after start_period + retries * interval; a cold start on a busy
            # machine (CI) needs at least a minute.
            health_deadline=max(
                60.0,
                _seconds(health.get("start_period"), 0.0)
                + interval * int(health.get("retries", 3)),
            ),
            depends_on={
                dep: cond.get("condition", "service_started") for dep, cond in depends.items()
            },
            replicas=int((spec.get("deploy") or {}).get("replicas", 1)),
            restart=RestartPolicy.from_compose(name, spec),
            mounts=_bind_mounts(path.parent, spec.get("volumes") or []),
        )
    return services


def start_order(services: Mapping[str, Service]) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise LocalModeError(f"depends_on cycle through {name}")
        if name not in services:
            raise LocalModeError(f"depends_on names unknown service {name}")
        visiting.add(name)
        for dep in services[name].depends_on:
            visit(dep)
        order.append(name)

    for name in services:
        visit(name)
    return order


# --- translating addresses -------------------------------------------------------------------


@dataclass
class AddressBook:
    """Where each compose service is reachable from this machine."""

    ports: dict[str, dict[int, int]] = field(default_factory=dict)  # service -> container -> local
    urls: dict[str, str] = field(default_factory=dict)  # infrastructure service -> its real URL

    def _host_port(self, service: str, port: int) -> str | None:
        if service in self.urls:
            netloc = urlsplit(self.urls[service]).netloc
            return netloc.rsplit("@", 1)[-1]
        local = self.ports.get(service, {}).get(port)
        return f"{LOCALHOST}:{local}" if local else None

    def translate(self, value: str, own: str) -> str:
        own_ports = self.ports.get(own, {})
        if value.isdigit() and int(value) in own_ports:
            return str(own_ports[int(value)])
        if value == "0.0.0.0":
            return LOCALHOST
        url = urlsplit(value) if "://" in value else None
        if url and url.hostname in self.urls:  # a database URL: take the machine's credentials too
            real = urlsplit(self.urls[url.hostname])
            path = real.path if real.path not in ("", "/") else url.path
            return urlunsplit((url.scheme, real.netloc, path, url.query, url.fragment))

        def host_port(match: re.Match[str]) -> str:
            host, port = match.group(1), int(match.group(2))
            service = own if host in ("localhost", LOCALHOST, "0.0.0.0") else host
            return self._host_port(service, port) or match.group(0)

        return re.sub(
            r"(?<![\w.-])([A-Za-z][\w.-]*|127\.0\.0\.1|0\.0\.0\.0):(\d+)\b", host_port, value
        )


# Ports free_port has handed out on this machine, one empty file each (its mtime: when).
HANDED_OUT = Path(tempfile.gettempdir()) / "localmode-ports"
PORT_HOLD_SECONDS = 300.0


def free_port() -> int:
    """A free port on 127.0.0.1 that no local-mode run on this machine was given in the last
    PORT_HOLD_SECONDS. The kernel's bind(0) knows only the ports bound now: between this call
    and the server binding the port, it may give the same one to another pattern starting at the
    same moment (parallel tests), which then answers the first one's health checks."""
    HANDED_OUT.mkdir(exist_ok=True)
    with open(HANDED_OUT / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # across processes; closing the file releases it
        for _ in range(1000):
            with socket.socket() as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            mark = HANDED_OUT / str(port)
            with contextlib.suppress(FileNotFoundError):
                if time.time() - mark.stat().st_mtime < PORT_HOLD_SECONDS:
                    continue
            mark.touch()
            return port
    raise LocalModeError(f"every free port was handed out in the last {PORT_HOLD_SECONDS:g} s")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


# --- processes -------------------------------------------------------------------------------


# Each service's process runs this first, then execs the service's command (same pid; the setting
# survives exec): the kernel sends it SIGKILL when local mode dies, even by kill -9, so nothing is
# left running. Not a preexec_fn, which Python documents as unsafe while threads run (local mode
# has an output reader per process and a supervisor). The kernel's "parent" is the thread that
# started the process: here the caller's (main) thread or the supervisor, both there until stop().
_DIE_WITH_PARENT = """
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != int(sys.argv[1]):  # local mode died before prctl: nobody would kill us
    os._exit(137)
os.execv(sys.argv[2], sys.argv[3:])
"""


def _launch_args(name: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    # Found here, so that a missing program is an error at start, not an exit of the launcher.
    executable = shutil.which(args[0], path=env.get("PATH"))
    if executable is None:
        raise LocalModeError(f"{name}: {args[0]} is not on the PATH")
    if sys.platform != "linux":
        return args
    launcher = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid())]
    return [*launcher, executable, *args]


def describe_exit(code: int) -> str:
    """A process's exit as a person says it: "exited with code 3", "killed by SIGKILL"."""
    if code >= 0:
        return f"exited with code {code}"
    with contextlib.suppress(ValueError):
        return f"killed by {signal.Signals(-code).name}"
    return f"killed by signal {-code}"


class Process:
    """One running copy of a service, its output prefixed and kept (the last lines) for tests.

    `lines` continues the output of the copy this one restarts, as `docker compose logs` does."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        echo: TextIO | None,
        cwd: Path,
        lines: deque[str] | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.echo = echo
        self.lines: deque[str] = deque(maxlen=2000) if lines is None else lines
        # Why local mode ended this process itself (stop(), kill()): then it is never restarted.
        self.stopped_by: str | None = None
        self.reported = False  # its exit has had its line
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            _launch_args(name, args, env),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group: stopping it stops its children too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.say(line.rstrip("\n"))

    def say(self, line: str) -> None:
        """Keep a line of this process's output, and echo it with the prefix."""
        self.lines.append(line)
        if self.echo is not None:
            self.echo.write(f"{self.name:<14}| {line}\n")
            self.echo.flush()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped_by = self.stopped_by or "stopped by local mode"
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Children that outlived their parent (a pool worker) go with the group, and so does a
        # process that ignored SIGTERM.
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)  # only a process stuck in the kernel outlives SIGKILL that long
        self._reader.join(timeout=2)

    def report_exit(self, action: str) -> None:
        """The one line every exit gets: how the process ended, and what local mode does."""
        if not self.reported:
            self.say(f"local mode: {describe_exit(self.popen.returncode or 0)}; {action}")
            self.reported = True

    def output(self) -> str:
        return "\n".join(self.lines)


class RedisServer:
    """A private redis-server, started from the compose service's own command line."""

    def __init__(self, args: list[str], echo: TextIO | None) -> None:
        if not shutil.which("redis-server"):
            raise LocalModeError(
                "this pattern needs redis-server on the PATH (Debian: apt-get install "
                "redis-server; macOS: brew install redis); `make run` can also use the Redis "
                "that REDIS_URL names, the tests always start their own"
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="localmode-redis-")
        extra = args[1:] if args[:1] == ["redis-server"] else []
        self.args = [
            "redis-server",
            *extra,
            "--port",
            str(self.port),
            "--bind",
            LOCALHOST,
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--save",
            "",
        ]
        self.echo = echo
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        self.process = Process("redis", self.args, dict(os.environ), self.echo, REPO_ROOT)
        deadline = time.monotonic() + 10
        while not _answers(LOCALHOST, self.port, 0.2):
            if not self.process.alive() or time.monotonic() > deadline:
                raise LocalModeError(f"redis-server did not start:\n{self.process.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process.report_exit("stopped by local mode")  # unless it had died before

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def nginx_binary() -> str | None:
    """The machine's nginx (Debian installs it in /usr/sbin, often off a user's PATH), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def envsubst(text: str, variables: Mapping[str, str]) -> str:
    """What the nginx image's entrypoint does to a template: `envsubst` given the names of the
    variables its environment defines, so $NAME and ${NAME} of those are replaced and every
    other $word (nginx's own $host, $request_id) is left as it is."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables[name] if name in variables else match.group(0)

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", substitute, text)


# The official image's nginx.conf, but for the paths: its pid, logs and temporary files go in
# the run's own directory, so the machine's nginx needs no root and leaves nothing behind.
_NGINX_MAIN = """\
worker_processes auto;
pid {dir}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    default_type application/octet-stream;
    # The image logs each request to stdout; here they go to a file, out of the way of the
    # services' output (a load test would flood it).
    access_log {dir}/access.log;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/conf.d/*.conf;
}}
"""
NGINX_TEMPLATES = "/etc/nginx/templates/"
NGINX_CONF_D = "/etc/nginx/conf.d/"


class NginxServer:
    """A service from the public nginx image, run by the machine's nginx with the pattern's own
    configuration, as the image would run it.

    The image renders each mounted /etc/nginx/templates/*.template with envsubst (the
    service's environment) into /etc/nginx/conf.d/, which its nginx.conf includes in http {};
    files mounted into /etc/nginx/conf.d/ are used as they are. Here the same templates are
    rendered with the same environment, translated as every service's is (a value that is the
    service's own port becomes the port local mode gives it, predictor:8001 becomes
    127.0.0.1:<its port>), into a private directory, next to a main configuration like the
    image's, and `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` runs it in the foreground.
    So a template listens where it is told: `listen ${SOME_PORT};`, with SOME_PORT the
    container port in compose. Up means every port of the service answers; its compose
    healthcheck runs in the image (with the image's tools) and is not run here.
    """

    def __init__(
        self,
        service: Service,
        environment: Mapping[str, str],
        ports: Mapping[int, int],
        echo: TextIO | None,
    ) -> None:
        binary = nginx_binary()
        if binary is None:
            raise LocalModeError(
                f"service {service.name} runs nginx: install it (Debian: apt-get install "
                "nginx-light; macOS: brew install nginx) or run the pattern with Docker"
            )
        self.name = service.name
        self.ports = sorted(ports.values())
        self.dir = tempfile.mkdtemp(prefix="localmode-nginx-")
        os.chmod(self.dir, 0o755)  # nginx's workers (another user when run as root) write here
        conf_d = Path(self.dir) / "conf.d"
        conf_d.mkdir()
        for source, target in service.mounts:
            self._configure(source, target, conf_d, environment)
        if not any(conf_d.iterdir()):
            raise LocalModeError(
                f"service {service.name}: no configuration mounted into {NGINX_TEMPLATES} or "
                f"{NGINX_CONF_D}, where the nginx image reads it"
            )
        main = Path(self.dir) / "nginx.conf"
        main.write_text(_NGINX_MAIN.format(dir=self.dir))
        # -e: the log nginx writes before it has read the configuration (else /var/log/nginx).
        self.args = [binary, "-p", self.dir, "-e", "stderr", "-c", str(main), "-g", "daemon off;"]
        self.echo = echo
        self.process: Process | None = None
        self.start()

    def _configure(
        self, source: Path, target: str, conf_d: Path, environment: Mapping[str, str]
    ) -> None:
        """Render (templates) or copy (conf.d files) what one mount puts in the image."""
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for file in files:
            inside = (
                target if file == source else f"{target.rstrip('/')}/{file.relative_to(source)}"
            )
            if inside.startswith(NGINX_TEMPLATES) and inside.endswith(".template"):
                out = conf_d / inside[len(NGINX_TEMPLATES) : -len(".template")]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(envsubst(file.read_text(), environment))
            elif inside.startswith(NGINX_CONF_D):
                out = conf_d / inside[len(NGINX_CONF_D) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, out)
            else:
                raise LocalModeError(
                    f"service {self.name}: local mode runs an nginx image from templates "
                    f"in {NGINX_TEMPLATES} or files in {NGINX_CONF_D}, not {inside}"
                )

    def start(self) -> None:
        for port in self.ports:  # else another program's answer would pass for nginx's
            if not _free(port):
                raise LocalModeError(f"port {port} for {self.name} is taken by another program")
        self.process = Process(self.name, self.args, dict(os.environ), self.echo, REPO_ROOT)
        deadline = time.monotonic() + 10
        while not all(_answers(LOCALHOST, port, 0.2) for port in self.ports):
            if not self.process.alive() or time.monotonic() > deadline:
                self.process.stop()
                raise LocalModeError(
                    f"nginx for {self.name} did not listen on {self.ports} (a template listens "
                    f"on a port its environment gives, so local mode can move it):\n"
                    f"{self.process.output()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process.report_exit("stopped by local mode")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _machine_url(url: str | None) -> str | None:
    """The URL, if a server answers there."""
    if url:
        parts = urlsplit(url)
        if parts.hostname and _answers(parts.hostname, parts.port or 0):
            return url
    return None


# --- the pattern -----------------------------------------------------------------------------


# Longest wait for a one-shot job that others wait on (compose would wait for ever).
ONE_SHOT_TIMEOUT = 600.0
BUILD_TIMEOUT = 900.0  # training every model from scratch on a slow machine
SUPERVISE_EVERY = 0.05  # how soon an exit is noticed


@dataclass
class _Restarts:
    """One replica's restart state, which outlives its processes (Docker's restart manager)."""

    count: int = 0  # restarts so far
    delay: float = 0.0  # the last back-off
    due: float | None = None  # time.monotonic() of the pending restart


class LocalPattern:
    """A pattern running as local processes. Use as a context manager; stop() ends everything.

    ports: "fixed" listens where Docker would publish (the published port, or the container
    port of an unpublished service), "free" picks free ones (parallel tests), an int shifts
    every port by that much. variables: what the shell would give compose for ${VAR}
    substitution (defaults to this process's environment).

    processes[name][i] is replica i's current process: a restart replaces it there. A
    supervisor thread reports every exit and applies the restart policies.
    """

    def __init__(
        self,
        pattern_dir: str | Path,
        ports: str | int = "fixed",
        variables: Mapping[str, str] | None = None,
        echo: TextIO | None = None,
        build: bool = True,
    ) -> None:
        self.dir = Path(pattern_dir).resolve()
        self.variables = dict(os.environ if variables is None else variables)
        self.services = load_compose(self.dir / COMPOSE_FILE, self.variables)
        self.order = start_order(self.services)
        self.echo = echo
        self.build = build
        self.addresses = AddressBook()
        for name, service in self.services.items():
            if service.runs_here:
                self.addresses.ports[name] = {
                    inside: self._place(published, ports)
                    for inside, published in service.ports.items()
                }
        self.processes: dict[str, list[Process]] = {name: [] for name in self.services}
        # The servers it started for public images: a private Redis, nginx.
        self.servers: dict[str, RedisServer | NginxServer] = {}
        # Services others wait on to complete: their exit 0 is the normal end.
        self.one_shots = {
            dep
            for service in self.services.values()
            for dep, condition in service.depends_on.items()
            if condition == "service_completed_successfully"
        }
        self._restarts: dict[str, list[_Restarts]] = {name: [] for name in self.services}
        # Held by the supervisor while it reads or replaces processes, and by the caller's thread
        # while it adds, kills or stops them.
        self._lock = threading.RLock()
        self._supervisor: threading.Thread | None = None
        self._supervisor_done = threading.Event()
        self._stopped = False

    @staticmethod
    def _place(port: int, ports: str | int) -> int:
        if ports == "fixed":
            return port
        if ports == "free":
            return free_port()
        return port + int(ports)

    # Public API -----------------------------------------------------------------------------

    def __enter__(self) -> LocalPattern:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.build:
            self._build()
        for name in self.order:
            service = self.services[name]
            for dep, condition in service.depends_on.items():
                self._wait_for(dep, condition)
            if service.builds:
                for _ in range(service.replicas):
                    self.start_replica(name)
            else:
                self._provide(service)
        # Up means healthy, as `docker compose up --wait` has it.
        for name in self.order:
            if self.services[name].builds and self.services[name].healthcheck:
                for index in range(len(self.processes[name])):
                    self.wait_healthy(name, index)

    def url(self, service: str, port: int | None = None) -> str:
        """http://127.0.0.1:PORT of a service (its first port unless one is named)."""
        ports = self.addresses.ports[service]
        return f"http://{LOCALHOST}:{ports[port if port is not None else next(iter(ports))]}"

    def service_url(self, service: str) -> str:
        """The real URL of an infrastructure service (redis://..., postgresql://...)."""
        return self.addresses.urls[service]

    def start_replica(self, name: str, **environment: str) -> Process:
        """Start one more copy of a service (what `docker compose up --scale` adds), with
        `environment` set over the compose file's (as `docker compose run -e` would)."""
        service = self.services[name]
        index = len(self.processes[name]) + 1
        with self._lock:
            if self._stopped:
                raise LocalModeError(f"cannot start {name}: this run is stopped")
            self._report_exits()  # a copy that has just exited may be due to restart
            restarting = any(r.due is not None for r in self._restarts[name])
            if service.ports and (restarting or any(p.alive() for p in self.processes[name])):
                raise LocalModeError(
                    f"{name} listens on a port: on one machine a second copy needs its own "
                    "LocalPattern (Docker gives each replica its own address)"
                )
        for port in self.addresses.ports[name].values():
            if not _free(port):
                raise LocalModeError(
                    f"port {port} for {name} is taken by another program: stop it, or move "
                    "the pattern's ports (see its compose.yaml for the variable)"
                )
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": f"{name}-{index}",
        }
        env.update({k: self.addresses.translate(v, name) for k, v in service.environment.items()})
        env.update(environment)
        args = [self.addresses.translate(arg, name) for arg in service.command]
        with self._lock:
            process = Process(f"{name}-{index}", args, env, self.echo, REPO_ROOT)
            self.processes[name].append(process)
            self._restarts[name].append(_Restarts())
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="localmode-supervisor", daemon=True
                )
                self._supervisor.start()
        return process

    def kill(self, name: str, index: int = 0, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one copy of a service and wait for its exit (SIGKILL: it dies holding
        whatever it held). As after `docker kill`, its restart policy does not bring it back: to
        see a crash restarted, signal its pid yourself."""
        with self._lock:
            process = self.processes[name][index]
            process.stopped_by = "not restarted: kill() ends a replica for good, as docker kill"
            self._restarts[name][index].due = None
        process.signal(sig)
        process.popen.wait(timeout=10)
        self._report_exits()

    def restart_infrastructure(self, name: str) -> None:
        """Stop and start a private infrastructure server (same port, same data directory)."""
        if name not in self.servers:
            raise LocalModeError(f"{name} is not a private server of this run: cannot restart it")
        self.servers[name].stop()
        self.servers[name].start()

    def stop_infrastructure(self, name: str) -> None:
        self.servers[name].stop()

    def wait_healthy(self, name: str, index: int = 0) -> None:
        """Wait until replica `index` passes its healthcheck; through restarts, as Docker's
        health status starts again with each one."""
        service = self.services[name]
        if not service.healthcheck:
            raise LocalModeError(f"service {name} has no healthcheck to wait for")
        args = [self.addresses.translate(arg, name) for arg in service.healthcheck]
        if args[0] == "python":
            args[0] = sys.executable
        deadline = time.monotonic() + service.health_deadline
        while True:
            process = self.processes[name][index]
            if self._done(name, index):
                raise LocalModeError(
                    f"{process.name} {describe_exit(process.popen.returncode or 0)} before it "
                    f"was healthy:\n{process.output()}"
                )
            if process.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    # Inside the container, with the service's own environment.
                    check = subprocess.run(
                        args,
                        cwd=REPO_ROOT,
                        capture_output=True,
                        timeout=service.health_timeout,
                        env=process.env,
                    )
                    if check.returncode == 0:
                        return
            if time.monotonic() > deadline:
                raise LocalModeError(f"{process.name} not healthy in time:\n{process.output()}")
            time.sleep(0.2)

    def logs(self, name: str) -> str:
        return "\n\n".join(p.output() for p in self.processes[name])

    def wait(self, timeout: float | None = None) -> int:
        """Block until every service process has exited for good (none is due to restart), or
        Ctrl-C; the worst exit code. With a timeout, LocalModeError when some still run then
        (`make run` has none: its services run until Ctrl-C)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if all(self._done(name, i) for name, i in self._replicas()):
                    codes = [p.popen.returncode or 0 for ps in self.processes.values() for p in ps]
                    return max((abs(code) for code in codes), default=0)
            if deadline is not None and time.monotonic() > deadline:
                raise LocalModeError(f"services still running after {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._report_exits()  # a crash of the last moment is told as such
            self._stopped = True  # from here on the supervisor reports exits, restarts nothing
            for name, procs in self.processes.items():
                for process, restarts in zip(procs, self._restarts[name], strict=True):
                    if restarts.due is not None:
                        restarts.due = None
                        process.say("local mode: restart cancelled, local mode is stopping")
        for name in reversed(self.order):
            for process in self.processes.get(name, []):
                process.stop()
        # Only now: the processes it restarted die with it (their kernel parent is its thread).
        self._supervisor_done.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        self._report_exits()  # those the supervisor had no time to see
        for server in self.servers.values():
            server.close()

    # Inside ---------------------------------------------------------------------------------

    def _replicas(self) -> list[tuple[str, int]]:
        return [(name, i) for name, procs in self.processes.items() for i in range(len(procs))]

    def _done(self, name: str, index: int) -> bool:
        """Replica `index` has exited, its exit is reported, and no restart is due."""
        with self._lock:
            process = self.processes[name][index]
            return process.reported and self._restarts[name][index].due is None

    def _supervise(self) -> None:
        """Report each exit and apply restart policies, until stop() has stopped everything."""
        while not self._supervisor_done.wait(SUPERVISE_EVERY):
            try:
                self._report_exits()
                self._restart_due()
            except Exception as exc:  # carry on: were it to end, what it restarted would die
                sys.stderr.write(f"local mode: supervisor error: {exc!r}\n")

    def _report_exits(self) -> None:
        with self._lock:
            for name, procs in self.processes.items():
                for process, restarts in zip(procs, self._restarts[name], strict=True):
                    code = process.popen.poll()
                    if code is not None and not process.reported:
                        # A container ends with its main process: so do the children left behind.
                        process.signal(signal.SIGKILL)
                        process.report_exit(self._exit_action(name, process, code, restarts))
            for server in self.servers.values():  # its stop() reports the exits it causes
                own = server.process
                if own is not None and not own.alive():
                    why = (
                        own.stopped_by
                        or "not restarted: local mode does not restart the servers it provides"
                    )
                    own.report_exit(why)

    def _exit_action(self, name: str, process: Process, code: int, restarts: _Restarts) -> str:
        """What local mode does about an exit (and a restart, if any, is scheduled)."""
        if process.stopped_by:
            return process.stopped_by
        if self._stopped:
            return "not restarted: local mode is stopping"
        refusal = self.services[name].restart.refusal(code, restarts.count)
        if refusal and code == 0 and name in self.one_shots:
            return "completed, as a one-shot job others wait for"
        if refusal:
            return refusal
        restarts.delay = restart_delay(restarts.delay, time.monotonic() - process.started)
        restarts.count += 1
        restarts.due = time.monotonic() + restarts.delay
        return f"restarting in {restarts.delay:g} s (attempt {restarts.count})"

    def _restart_due(self) -> None:
        with self._lock:
            for name, procs in self.processes.items():
                for index, restarts in enumerate(self._restarts[name]):
                    if restarts.due is None or time.monotonic() < restarts.due or self._stopped:
                        continue
                    restarts.due = None
                    old = procs[index]
                    try:
                        procs[index] = Process(
                            old.name, old.args, old.env, self.echo, REPO_ROOT, lines=old.lines
                        )
                    except (OSError, LocalModeError) as exc:
                        old.say(f"local mode: restart failed, not restarted: {exc}")

    def _build(self) -> None:
        try:
            subprocess.run(
                [sys.executable, "-m", "shared.training", "ensure"],
                cwd=REPO_ROOT,
                check=True,
                capture_output=self.echo is None,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalModeError(f"training the models took over {BUILD_TIMEOUT:g} s") from exc

    def _wait_for(self, name: str, condition: str) -> None:
        if not self.services[name].builds:
            return  # provided from the machine, answering before we go on
        for index in range(len(self.processes[name])):
            if condition == "service_healthy":
                self.wait_healthy(name, index)
            elif condition == "service_completed_successfully":
                deadline = time.monotonic() + ONE_SHOT_TIMEOUT
                while not self._done(name, index):
                    if time.monotonic() > deadline:
                        raise LocalModeError(
                            f"{name} has not completed in {ONE_SHOT_TIMEOUT:g} s: local mode "
                            "does not wait for ever for a one-shot job"
                        )
                    time.sleep(0.05)
                process = self.processes[name][index]
                if process.popen.returncode != 0:
                    raise LocalModeError(
                        f"{process.name} {describe_exit(process.popen.returncode or 0)}:\n"
                        f"{process.output()}"
                    )

    def _provide(self, service: Service) -> None:
        image = _image_name(service.image)
        if image.startswith("nginx"):
            environment = {
                k: self.addresses.translate(v, service.name) for k, v in service.environment.items()
            }
            nginx = NginxServer(service, environment, self.addresses.ports[service.name], self.echo)
            with self._lock:
                self.servers[service.name] = nginx
            return
        if image.startswith("redis"):
            url = _machine_url(self.variables.get("REDIS_URL"))
            if url is None:
                server = RedisServer(service.command, self.echo)
                with self._lock:
                    self.servers[service.name] = server
                url = server.url
        elif image.startswith("postgres"):
            # The machine's server, and there the database the compose file names (POSTGRES_DB),
            # made on first use as the image makes it: each pattern's tables apart from the
            # others'. DATABASE_URL (a test's own database) overrides both.
            database = service.environment.get("POSTGRES_DB", "postgres")
            given = self.variables.get("DATABASE_URL")
            url = _machine_url(given or f"postgresql://postgres@{LOCALHOST}:5432/{database}")
            if url is None:
                raise NoPostgres(
                    "this pattern needs PostgreSQL: set DATABASE_URL to one that answers, or "
                    "install and start one on 127.0.0.1:5432 (Debian: apt-get install postgresql)"
                )
            if not given:
                from shared.database import create_database  # SQLAlchemy only where needed

                create_database(url)
        else:
            raise LocalModeError(f"local mode cannot provide image {service.image}; use Docker")
        self.addresses.urls[service.name] = url
