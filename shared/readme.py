"""A README's "Try it", run as a reader runs it: the README cannot drift from the code.

Each shell block (```sh, ```bash) of the "## Try it" section is run with bash, in one shell
session from the repository root (a variable set in one block is there in the next), with the
virtual environment off the PATH, as in a newcomer's terminal. The block that follows it with
nothing but blank lines between, if it is not a shell block (```json, ```text, ```), is what the
command prints; a command with no output block must exit 0. An output block that follows no
command is an error: every output shown must come from a command shown. Several output blocks
in a row (the job's lines, then a JSON answer) are one output.

The pattern runs in local mode on free ports, as `make run` starts it. The README writes the
pattern's own ports (`curl -s localhost:8000/predict`): each of them, in a command, is replaced by
the port the test listens on, and back in the output. A block that is `make run PATTERN=...`,
with variables before it if need be (`SYNCHRONOUS_PREDICTOR_DELAY_SECONDS=2 make run
PATTERN=sync`), stops the running pattern (Ctrl-C) and starts it again with those variables;
a block marked with the comment `# in another terminal` keeps running in the background until
the end. Before the first command, the pattern is started as the Run section does.

Outputs are compared after masking what changes from run to run: ids (32 hex digits, UUIDs),
timestamps, durations with decimals (`1.003179s`), and the last digits of numbers with
decimals (each keeps 4 significant digits, and may be off by 0.05 %: onnxruntime's kernels
differ by CPU, AVX2 or AVX-512, in the last bits of a float, which a probability of 1e-8 shows
in its fourth digit). A line `...` in the README's output stands for any
number of lines. An id the README shows in an output and uses in a later command (a job id) is
replaced there by the id of this run. A command that fails or prints something else is run
again until it matches (a job that is still pending, a service coming back), for 30 s; then the
test fails with the difference.

    python -m shared.readme serving_patterns/web_single   # run one README's Try it
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shared.catalogue import find
from shared.localmode import REPO_ROOT, LocalPattern

SHELL_LANGUAGES = {"sh", "bash", "shell"}
IN_ANOTHER_TERMINAL = "# in another terminal"
RETRY_SECONDS = 30.0  # how long a command is run again until its output matches
COMMAND_TIMEOUT = 120.0  # the longest one run of a command may take
# The PostgreSQL database a README names for local mode (its compose file's POSTGRES_DB on the
# machine's server); the test's own database replaces it.
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/{database}"


class ReadmeError(AssertionError):
    """A README whose Try it cannot be run as written, or whose output is not what it shows."""


@dataclass
class Step:
    """One shell block of Try it and the output block after it (None: none shown)."""

    command: str
    expected: str | None
    line: int  # where the shell block starts in the README, 1-based

    @property
    def starts_pattern(self) -> dict[str, str] | None:
        """The variables of a `[VAR=value ...] make run PATTERN=x` block, or None."""
        lines = [ln for ln in self.command.splitlines() if ln.strip() and ln.strip()[0] != "#"]
        try:
            words = shlex.split(lines[0], comments=True) if len(lines) == 1 else []
        except ValueError:
            return None
        variables: dict[str, str] = {}
        while words and re.fullmatch(r"\w+=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            variables[name] = value
        if words[:2] != ["make", "run"]:
            return None
        for word in words[2:]:  # PATTERN=x, and any other make variable
            name, _, value = word.partition("=")
            variables[name] = value
        return variables

    @property
    def in_background(self) -> bool:
        return IN_ANOTHER_TERMINAL in self.command


_FENCE = re.compile(r"^```(\S*)\s*$")


def try_it_steps(readme: Path) -> list[Step]:
    """The steps of a README's "## Try it" section, in order."""
    lines = readme.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "## Try it"), None)
    if start is None:
        raise ReadmeError(f"{readme}: no '## Try it' section")
    steps: list[Step] = []
    previous_end = -1  # after the closing fence of a shell block or its output, else -1
    i = start + 1
    while i < len(lines) and not lines[i].startswith("## "):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ReadmeError(f"{readme}:{i + 1}: a code block that is never closed")
        text = "\n".join(lines[i + 1 : end])
        if opening.group(1) in SHELL_LANGUAGES:
            steps.append(Step(text, None, i + 1))
            previous_end = end + 1
        elif previous_end >= 0 and all(not ln.strip() for ln in lines[previous_end:i]):
            # Several output blocks in a row (text, then JSON) are one output, in that order.
            shown = steps[-1].expected
            steps[-1].expected = text if shown is None else f"{shown}\n{text}"
            previous_end = end + 1
        else:
            raise ReadmeError(
                f"{readme}:{i + 1}: an output block that follows no command: show the command "
                "that prints it, in a ```sh block just before it"
            )
        i = end + 1
    return steps


# --- masking -----------------------------------------------------------------------------------

_ID = re.compile(
    r"(?<![0-9a-f])(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})"
    r"(?![0-9a-f])"
)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_DURATION = re.compile(r"(?<![\w.])\d+\.\d+ ?(?:ms|µs|us|s)\b")
NUMBER_TOLERANCE = 5e-4  # relative: a float's last bits, which differ by CPU
_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])|(?<![\w.])\d+[eE][-+]?\d+\b")
# The reason phrase of an HTTP status line is http.HTTPStatus's, which Python versions word
# differently (422: "Unprocessable Entity" up to 3.12, "Unprocessable Content" from 3.13).
_STATUS_LINE = re.compile(r"^(HTTP/\d(?:\.\d)? \d{3}) .*$", re.M)


def mask(text: str) -> str:
    """`text` with what changes from run to run made the same."""
    text = _ID.sub("<id>", text)
    text = _STATUS_LINE.sub(r"\1", text)
    text = _TIMESTAMP.sub("<time>", text)
    text = _DURATION.sub("<duration>", text)
    return _NUMBER.sub(lambda m: f"{float(m.group(0)):.4g}", text)


def _fits(expected: list[str], actual: list[str]) -> bool:
    """The lines match, a line `...` of `expected` standing for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(_fits(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and _same(expected[0], actual[0]) and _fits(expected[1:], actual[1:])


def _same(expected: str, actual: str) -> bool:
    """The (masked) lines are equal, but for numbers with decimals within NUMBER_TOLERANCE."""
    if expected == actual:
        return True
    if _NUMBER.sub("<n>", expected) != _NUMBER.sub("<n>", actual):
        return False
    pairs = zip(_NUMBER.findall(expected), _NUMBER.findall(actual), strict=True)
    return all(math.isclose(float(a), float(b), rel_tol=NUMBER_TOLERANCE) for a, b in pairs)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").splitlines()]


def difference(expected: str, actual: str, shown: str = "README") -> str | None:
    """None when `actual` is what `expected` shows (masked), else a diff of the two, masked."""
    want, got = _lines(mask(expected)), _lines(mask(actual))
    if _fits(want, got):
        return None
    diff = difflib.unified_diff(want, got, f"{shown} (masked)", "actual (masked)", lineterm="")
    return "\n".join(diff)


# --- the shell ---------------------------------------------------------------------------------


def newcomer_environment() -> dict[str, str]:
    """This process's environment without the virtual environment on the PATH."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "REDIS_URL")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join(path)
    return env


class Shell:
    """One bash session fed commands one at a time, as a reader types them into a terminal."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=dict(env),
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: close() ends what it started
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """The exit status and output (stdout and stderr) of `command`."""
        marker = f"--- end of command {os.urandom(8).hex()}"
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        # Nothing read from the terminal: a command reading stdin would eat the next ones.
        stdin.write(f"{{\n{command}\n}} </dev/null 2>&1\nprintf '\\n{marker} %d\\n' $?\n")
        stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ReadmeError(
                    f"still running after {timeout:g} s:\n{command}\n{''.join(output)}"
                ) from None
            if line is None:
                raise ReadmeError(f"the shell ended during:\n{command}\n{''.join(output)}")
            if line.startswith(marker):
                text = "".join(output)
                return int(line.split()[-1]), text[:-1] if text.endswith("\n") else text
            output.append(line)

    def close(self) -> None:
        _end_group(self.process)


def _end_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the process group this module started, then SIGKILL to what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


# --- the run -----------------------------------------------------------------------------------


def _port_pattern(port: int) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){port}(?!\w)")


@dataclass
class TryIt:
    """The state of one run of a README's Try it: the pattern, the shell, what was learnt."""

    folder: Path
    variables: dict[str, str]
    replace: dict[str, str]
    retry_seconds: float
    shell: Shell
    stack: ExitStack
    pattern: LocalPattern | None = None
    pattern_stack: ExitStack | None = None
    ports: dict[int, int] = field(default_factory=dict)  # the README's port -> the run's
    ids: dict[str, str] = field(default_factory=dict)  # an id the README shows -> the run's
    background: list[tuple[subprocess.Popen[str], str, Path]] = field(default_factory=list)

    def start_pattern(self, variables: Mapping[str, str]) -> None:
        """What Ctrl-C and `VARS make run PATTERN=x` do."""
        from shared.testing import pattern_running  # it imports pytest: only when it runs

        if self.pattern_stack is not None:
            self.pattern_stack.close()
        self.pattern_stack = ExitStack()
        self.pattern = self.pattern_stack.enter_context(
            pattern_running(self.folder, **{**self.variables, **variables})
        )
        self.ports = {
            published: self.pattern.addresses.ports[name][inside]
            for name, service in self.pattern.services.items()
            if service.runs_here  # built here, or nginx: a process of the pattern's own
            for inside, published in service.ports.items()
        }

    def command(self, text: str) -> str:
        for readme_id, run_id in self.ids.items():
            text = text.replace(readme_id, run_id)
        for old, new in self.replace.items():
            text = text.replace(old, new)
        for readme_port, port in self.ports.items():
            text = _port_pattern(readme_port).sub(str(port), text)
        return text

    def output(self, text: str) -> str:
        for readme_port, port in self.ports.items():
            text = _port_pattern(port).sub(str(readme_port), text)
        for old, new in self.replace.items():
            text = text.replace(new, old)
        return text

    def run_in_background(self, command: str) -> None:
        log = Path(tempfile.mkstemp(prefix="readme-background-", suffix=".log")[1])
        self.stack.callback(log.unlink, missing_ok=True)
        with log.open("w") as out:
            process = subprocess.Popen(
                ["bash", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=newcomer_environment(),
                text=True,
                start_new_session=True,
            )
        self.stack.callback(_end_group, process)
        self.background.append((process, command, log))

    def check(self, step: Step, where: str) -> None:
        command = self.command(step.command)
        deadline = time.monotonic() + self.retry_seconds
        attempts = 0
        first = ""
        while True:
            attempts += 1
            code, raw = self.shell.run(command)
            printed = self.output(raw)
            first = first or printed
            diff = None if step.expected is None else difference(step.expected, printed)
            if code == 0 and diff is None:
                break
            if time.monotonic() > deadline:
                failure = self._failure(step, where, attempts, code, printed, diff)
                if first != printed:  # what went wrong first; the reruns may have added to it
                    failure += f"\n\nThe first run printed, unmasked:\n{first}"
                raise ReadmeError(failure)
            time.sleep(0.2)
        if step.expected is not None:
            readme_ids, run_ids = _ID.findall(step.expected), _ID.findall(printed)
            for readme_id, run_id in zip(readme_ids, run_ids, strict=False):
                self.ids.setdefault(readme_id, run_id)

    def _failure(
        self, step: Step, where: str, attempts: int, code: int, printed: str, diff: str | None
    ) -> str:
        runs = f"run {attempts} times in {self.retry_seconds:g} s" if attempts > 1 else "run once"
        parts = [f"{where}: this command ({runs}, the last shown),\n{step.command}"]
        if code != 0:
            parts.append(f"exited with {code}")
        if diff is not None:
            parts.append(f"printed something else than the README shows:\n{diff}")
        parts.append(f"It printed, unmasked:\n{printed}")
        for process, command, log in self.background:
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            parts.append(f"In the background ({state}):\n{command}\nlogged:\n{log.read_text()}")
        return "\n\n".join(parts)


@contextlib.contextmanager
def _session(
    folder: Path, variables: Mapping[str, str], replace: Mapping[str, str], retry_seconds: float
) -> Iterator[TryIt]:
    from shared.testing import postgres_database, postgres_database_name

    with ExitStack() as stack:
        extra = dict(variables)
        replacements = dict(replace)
        # The README says .venv, make setup's; the suite may run in another (.venv-3.11 in CI).
        venv = Path(sys.prefix)
        if venv != REPO_ROOT / ".venv":
            replacements.setdefault(".venv/", f"{venv}/")
        database = postgres_database_name(folder)
        if "DATABASE_URL" not in extra and database:
            # One database for the whole run: a restart by `make run` keeps its rows.
            extra["DATABASE_URL"] = stack.enter_context(postgres_database("readme"))
            replacements.setdefault(LOCAL_POSTGRES.format(database=database), extra["DATABASE_URL"])
        shell = Shell(newcomer_environment())
        stack.callback(shell.close)
        run = TryIt(folder, extra, replacements, retry_seconds, shell, stack)
        try:
            yield run
        finally:
            if run.pattern_stack is not None:
                run.pattern_stack.close()


def run_try_it(
    folder: str | Path,
    variables: Mapping[str, str] | None = None,
    replace: Mapping[str, str] | None = None,
    retry_seconds: float = RETRY_SECONDS,
    readme: Path | None = None,
) -> int:
    """Run the Try it of `folder`/README.md against the pattern; ReadmeError at the first
    command whose output is not the README's. The number of steps run.

    variables: set for the pattern as a shell's exports (a private database file, say);
    replace: text of the README's commands to replace for this run (a path, say), and back in
    their outputs; readme: another file to read the steps from (the folder's README.md)."""
    folder = Path(folder).resolve()
    readme = (readme or folder / "README.md").resolve()
    steps = try_it_steps(readme)
    if not steps:
        raise ReadmeError(f"{readme}: Try it shows no command")
    with _session(folder, variables or {}, replace or {}, retry_seconds) as run:
        for step in steps:
            where = f"{readme}:{step.line}"
            restart = step.starts_pattern
            if restart is not None:
                named = find(restart.pop("PATTERN", ""))
                if named is None or named.path.resolve() != folder or step.expected:
                    raise ReadmeError(f"{where}: `make run` of another pattern, or with output")
                run.start_pattern(
                    {k: v for k, v in restart.items() if k not in ("LOCAL", "PORT_OFFSET")}
                )
                continue
            if run.pattern is None:
                run.start_pattern({})
            if step.in_background:
                run.run_in_background(run.command(step.command))
            else:
                run.check(step, where)
    return len(steps)


def main() -> int:
    for folder in sys.argv[1:] or ["."]:
        try:
            count = run_try_it(folder)
        except ReadmeError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
        sys.stdout.write(f"{folder}: {count} steps as the README shows\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
