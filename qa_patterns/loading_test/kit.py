"""The loading test kit: step loads and their charts, one worker against N, and the load
generator's own CPU, on top of `make load` (shared/loadtest.py) and the patterns' locustfiles.

    make load PATTERN=web-single STEPS=4,8,16,32 DURATION=10s    # any pattern: a step load
    python -m qa_patterns.loading_test.kit workers               # single against multi
    python -m qa_patterns.loading_test.kit generator             # who is the bottleneck?

Every run writes its figures (JSON) and its chart (PNG) into reports/.
"""

import argparse
import csv
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from qa_patterns.loading_test.chart import draw_generator, draw_steps
from shared.catalogue import REPO_ROOT, Entry
from shared.logs import configure_logging

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
STEPS_FILE = HERE / "steps.py"
REPORTS = REPO_ROOT / "reports"


def seconds(duration: str) -> float:
    """Locust's --run-time spelling (90, 30s, 2m, 1h30m) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", duration.strip())
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a duration: {duration!r} (30s, 2m, 1h30m)")
    hours, minutes, secs = (float(group or 0) for group in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def step_load(
    locustfile: Path,
    host: str,
    users: list[int],
    step_seconds: float,
    name: str,
    environment: dict[str, str] | None = None,
    reports: Path = REPORTS,
) -> tuple[int, dict[str, Any]]:
    """Run `users` in turn, each for `step_seconds`; return Locust's exit code and each step's
    figures (steps.py), also written to reports/<name>.json beside the HTML report."""
    reports.mkdir(exist_ok=True)
    out = reports / f"{name}.json"
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        **(environment or {}),
        "LOADTEST_STEPS": ",".join(str(count) for count in users),
        "LOADTEST_STEP_SECONDS": str(step_seconds),
        "LOADTEST_STEPS_OUT": str(out),
    }
    command = [
        sys.executable, "-m", "locust", "-f", f"{locustfile},{STEPS_FILE}", "--headless",
        "--host", host, "--html", str(reports / f"{name}.html"), "--only-summary",
    ]  # fmt: skip
    code = subprocess.call(command, cwd=REPO_ROOT, env=env)
    if not out.exists():
        raise SystemExit(f"the step load wrote no figures (Locust exit code {code})")
    return code, json.loads(out.read_text())


def table(figures: dict[str, Any]) -> str:
    lines = ["users  req/s    p50 ms   p90 ms   p99 ms  errors  SLO"]
    for step in figures["steps"]:
        lines.append(
            f"{step['users']:>5}  {step['rps']:>7.0f}  {step['p50_ms']:>7.1f}  "
            f"{step['p90_ms']:>7.1f}  {step['p99_ms']:>7.1f}  {step['error_rate']:>6.2%}  "
            f"{'met' if step['meets_slo'] else 'broken'}"
        )
    return "\n".join(lines)


def step_load_main(entry: Entry, host: str, args: argparse.Namespace) -> int:
    """`make load PATTERN=x STEPS=4,8,16` (shared/loadtest.py --steps): any pattern's
    locustfile, stepped, then charted with its SLO."""
    users = [int(count) for count in args.steps.split(",")]
    name = f"{entry.slug}-steps"
    locustfile = entry.path / "locustfile.py"
    code, figures = step_load(locustfile, host, users, seconds(args.duration), name)
    chart = draw_steps({entry.name: figures}, REPORTS / f"{name}.png", f"{entry.name}: step load")
    print(table(figures))  # noqa: T201
    print(f"chart: {chart.relative_to(REPO_ROOT)}  figures: reports/{name}.json")  # noqa: T201
    return code


def compare_workers(
    single: str,
    multi: str,
    users: list[int],
    step_seconds: float,
    workers: int,
    rows: int,
    reports: Path = REPORTS,
    rounds: int = 1,
) -> dict[str, dict[str, Any]]:
    """The same step load on one worker and on N, drawn on one chart.

    Every request is one body of `rows` rows, made once, so that the target's CPU sets the pace
    (the mix of locustfile.py spends more of the generator's). With several rounds the runs
    alternate (1, N, N, 1, ...), so that a machine busier at one moment weighs on both alike,
    and each step's figure is the median of its rounds. Each run also counts the target's CPU
    time, process by process: how much of the work each worker took."""
    targets = {"1 worker": single, f"{workers} workers": multi}
    environment = {"LOADING_TEST_LOCUST_ROWS": str(rows)}
    done: dict[str, list[dict[str, Any]]] = {label: [] for label in targets}
    for index in range(rounds):
        for label in list(targets)[:: 1 if index % 2 == 0 else -1]:
            host = targets[label]
            name = "loading-test-" + label.replace(" ", "-")
            processes = serving_processes(port_of(host))
            before = cpu_seconds(processes)
            figures = step_load(LOCUSTFILE, host, users, step_seconds, name, environment, reports)[
                1
            ]
            after = cpu_seconds(processes)
            figures["target_cpu_seconds"] = {
                str(pid): after[pid] - before.get(pid, 0.0) for pid in after
            }
            done[label].append(figures)
    runs = {label: median_run(figures) for label, figures in done.items()}
    for label, run in runs.items():
        print(f"{label} ({targets[label]}), {rows} rows a request\n{table(run)}")  # noqa: T201
    title = f"web single, {rows} rows a request: 1 worker against {workers}"
    draw_steps(runs, reports / "loading-test-workers.png", title)
    (reports / "loading-test-workers.json").write_text(json.dumps(runs, indent=2))
    return runs


def median_run(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's figures from several rounds of it: each step's numbers, the median of its
    rounds; failures and CPU seconds, the sum."""
    merged = {**rounds[0], "rounds": len(rounds)}
    steps = []
    for at, step in enumerate(rounds[0]["steps"]):
        same = [run["steps"][at] for run in rounds]
        steps.append(
            {
                **step,
                **{
                    key: statistics.median(s[key] for s in same)
                    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "error_rate", "requests")
                },
                "failures": sum(s["failures"] for s in same),
                "meets_slo": sum(s["meets_slo"] for s in same) * 2 > len(same),
            }
        )
    merged["steps"] = steps
    cpu: dict[str, float] = {}
    for run in rounds:
        for pid, spent in run["target_cpu_seconds"].items():
            cpu[pid] = cpu.get(pid, 0.0) + spent
    merged["target_cpu_seconds"] = cpu
    requests = sum(step["requests"] for run in rounds for step in run["steps"])
    # Over the counted part of the steps only, so a little high: the warm-ups' requests
    # spent CPU too. The same bias for both runs.
    merged["target_us_per_request"] = sum(cpu.values()) / requests * 1e6 if requests else 0.0
    return merged


def port_of(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise SystemExit(f"{url}: give the port")
    return port


def serving_processes(port: int) -> list[psutil.Process]:
    """Every process that holds the socket listening on `port` (a uvicorn parent and each worker
    it forked, all accepting on it), and their children."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            listening = any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in process.net_connections(kind="tcp")
            )
            if listening:
                for member in [process, *process.children(recursive=True)]:
                    found[member.pid] = member
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if not found:
        raise SystemExit(f"nothing listens on port {port}")
    return list(found.values())


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for process in processes:
        try:
            spent = process.cpu_times()
            times[process.pid] = spent.user + spent.system
        except psutil.NoSuchProcess:
            pass
    return times


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def generator_run(
    host: str, user_class: str, processes: int, users: int, duration: float
) -> dict[str, Any]:
    """One fixed load; Locust's CPU and the target's over its middle (warm-up and shutdown left
    out), in cores: 1.0 is one core busy the whole time."""
    target = serving_processes(port_of(host))
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{duration:g}s",
            "--host", host, "--csv", f"{folder}/run", "--only-summary",
        ]  # fmt: skip
        if processes > 1:
            command += ["--processes", str(processes)]
        env = {**os.environ, "LOADING_TEST_LOCUST_USER": user_class}
        locust = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        output: list[str] = []
        spawned = threading.Event()

        def read() -> None:
            assert locust.stderr is not None
            for line in locust.stderr:
                output.append(line)
                if "All users spawned" in line:
                    spawned.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # Locust's imports take seconds on a busy machine, and --run-time counts from the
        # spawn: the window is taken from there, never from the start of the process.
        if not spawned.wait(timeout=120):
            locust.kill()
            raise SystemExit("Locust spawned no users:\n" + "".join(output)[-2000:])
        warmup = min(3.0, duration / 4)
        time.sleep(warmup)  # a fixed window of a run that lasts `duration`, not a wait for luck
        generator = tree(locust.pid)
        started = time.monotonic()
        locust_before, target_before = cpu_seconds(generator), cpu_seconds(target)
        time.sleep(duration - 2 * warmup)
        window = time.monotonic() - started
        locust_after, target_after = cpu_seconds(generator), cpu_seconds(target)
        locust.wait(timeout=duration + 60)
        reader.join(timeout=10)
        if locust.returncode not in (0, 1):  # 1: the SLO broken, which this run does not judge
            raise SystemExit("Locust failed:\n" + "".join(output)[-2000:])
        with open(f"{folder}/run_stats.csv") as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")

    def cores(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(after[pid] - before.get(pid, 0.0) for pid in after) / window

    label = {"fast": "FastHttpUser", "http": "HttpUser"}[user_class]
    rps = float(total["Requests/s"])
    locust_cores, target_cores = (
        cores(locust_before, locust_after),
        cores(target_before, target_after),
    )
    return {
        "label": f"{label} x{processes}",
        "user_class": label,
        "processes": processes,
        "users": users,
        "rps": rps,
        "p99_ms": float(total["99%"]),
        "failures": int(total["Failure Count"]),
        "locust_cores": locust_cores,
        "target_cores": target_cores,
        # CPU time a request costs each side: the figure a busy machine changes least. The side
        # that needs more of it per request, on as many cores, runs out first.
        "locust_us_per_request": locust_cores / rps * 1e6 if rps else 0.0,
        "target_us_per_request": target_cores / rps * 1e6 if rps else 0.0,
        "target_processes": len(target),
        "locust_processes": len(generator),
    }


def compare_generators(
    host: str,
    users: int,
    duration: float,
    variants: list[tuple[str, int]],
    reports: Path = REPORTS,
) -> list[dict[str, Any]]:
    results = [generator_run(host, kind, procs, users, duration) for kind, procs in variants]
    print("generator            req/s  p99 ms  cores: Locust target  µs/request: Locust target")  # noqa: T201
    for r in results:
        print(  # noqa: T201
            f"{r['label']:<18} {r['rps']:>7.0f} {r['p99_ms']:>7.0f}  {r['locust_cores']:>13.2f}"
            f" {r['target_cores']:>6.2f}  {r['locust_us_per_request']:>18.0f}"
            f" {r['target_us_per_request']:>6.0f}"
        )
    reports.mkdir(exist_ok=True)
    draw_generator(results, reports / "loading-test-generator.png",
                   f"the load generator against the target ({users} users, {host})")  # fmt: skip
    (reports / "loading-test-generator.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> int:
    configure_logging("loading-test-kit")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    workers = commands.add_parser("workers", help="step load on 1 worker, then on N")
    workers.add_argument("--single", default="http://127.0.0.1:8230")
    workers.add_argument("--multi", default="http://127.0.0.1:8231")
    workers.add_argument("--workers", type=int, default=int(os.environ.get(
        "LOADING_TEST_MULTI_WORKERS", "2")), help="as multi was started with")  # fmt: skip
    workers.add_argument("--steps", default="1,2,4,8,16,32")
    workers.add_argument("--duration", default="10s", help="each step's")
    workers.add_argument("--rows", type=int, default=100, help="rows in every request")
    workers.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    generator = commands.add_parser("generator", help="Locust's CPU against the target's")
    generator.add_argument("--host", default="http://127.0.0.1:8231")
    generator.add_argument("--users", type=int, default=32)
    generator.add_argument("--duration", default="20s")
    generator.add_argument("--variants", default="http:1,fast:1,fast:2",
                           help="user class (http, fast) : Locust processes, ...")  # fmt: skip
    args = parser.parse_args()
    if args.command == "workers":
        steps = [int(count) for count in args.steps.split(",")]
        compare_workers(
            args.single,
            args.multi,
            steps,
            seconds(args.duration),
            args.workers,
            args.rows,
            rounds=args.rounds,
        )
    else:
        variants = [(kind, int(procs)) for kind, procs in
                    (item.split(":") for item in args.variants.split(","))]  # fmt: skip
        compare_generators(args.host, args.users, seconds(args.duration), variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
