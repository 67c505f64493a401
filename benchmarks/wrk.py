"""Drive wrk (a C load generator, so the client is not the bottleneck) and read its figures."""

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx2

from shared.localmode import REPO_ROOT


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    requests: int = 0  # answered in the run


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far: its cost per request does not
    depend on how many other processes share the machine, as its requests/s does."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(
    url: str,
    body: str,
    connections: int = 32,
    seconds: int = 10,
    threads: int = 2,
    max_pause_ms: int = 0,
    extra_lua: str = "",
) -> Result:
    """POST `body` as JSON to `url` over keep-alive connections for `seconds`.

    With max_pause_ms, each connection waits a random 0..max_pause_ms before each request:
    an open-ish loop whose offered rate does not depend on the server, and whose clients do
    not fire in lockstep. `extra_lua` goes at the end of wrk's script (a `request` function
    that varies the body, say).
    """
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body}]==]\n"  # a long bracket: JSON bodies hold "]]"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    if max_pause_ms:
        script += f"function delay() return math.random(0, {max_pause_ms}) end\n"
    script += extra_lua
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        Path(lua.name).write_text(script)
        args = [f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", lua.name]
        out = subprocess.run(["wrk", *args, url], capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Result(
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_find(r"^\s+50%\s+(\S+)", out)),
        p99_ms=_ms(_find(r"^\s+99%\s+(\S+)", out)),
        errors=(int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, sockets.groups())) if sockets else 0),
        requests=int(_find(r"(\d+) requests in", out)),
    )


def _find(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.M)
    assert found, f"{pattern} not in wrk's output:\n{text}"
    return found.group(1)


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert found, f"not a wrk duration: {text}"
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]


def answers(url: str, body: str, status: int) -> bool:
    """Whether POSTing `body` to `url` gets `status` (is the server up before we load it)."""
    try:
        response = httpx2.post(url, content=body, headers={"content-type": "application/json"})
    except httpx2.HTTPError:
        return False
    return response.status_code == status


def uvicorn(
    app: str, port: int, env: dict[str, str] | None = None, factory: bool = False
) -> subprocess.Popen[bytes]:
    """An app as one uvicorn worker, with the flags the patterns' services use."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []),
         "--port", str(port), "--no-access-log", "--log-level", "warning",
         "--http", "shared.server:Protocol"],
        cwd=REPO_ROOT,
        env=env,
    )  # fmt: skip
