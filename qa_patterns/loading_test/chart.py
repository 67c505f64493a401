"""The kit's charts (matplotlib, PNG): latency against load with the SLO line on it, one curve
per run (one worker, N workers), and throughput under it; and where the CPU went in the
generator runs (Locust's against the target's)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def draw_steps(runs: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """runs: label -> a step load's figures (steps.py's JSON). The SLO is the first run's."""
    figure = steps_figure(runs, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def steps_figure(runs: dict[str, dict[str, Any]], title: str) -> Figure:
    figure, (latency, throughput) = plt.subplots(
        2, 1, figsize=(8, 7), sharex=True, height_ratios=[3, 2]
    )
    slo = next(iter(runs.values()))["slo"]
    for index, (label, figures) in enumerate(runs.items()):
        color = f"C{index}"
        steps = figures["steps"]
        users = [step["users"] for step in steps]
        latency.plot(users, [s["p99_ms"] for s in steps], "o-", color=color, label=f"{label} p99",
                     gid=f"p99 {label}")  # fmt: skip
        latency.plot(users, [s["p50_ms"] for s in steps], "o--", color=color, alpha=0.6,
                     label=f"{label} p50")  # fmt: skip
        throughput.plot(users, [s["rps"] for s in steps], "o-", color=color, label=label)
        for step in steps:
            if not step["meets_slo"]:  # the steps past the SLO, marked on the curve
                latency.plot(step["users"], step["p99_ms"], "x", color="red", markersize=10)
    if slo is not None:
        latency.axhline(slo["p99_ms"], color="red", linestyle=":", gid="slo",
                        label=f"SLO p99 {slo['p99_ms']:g} ms")  # fmt: skip
        if slo["min_rps"]:
            throughput.axhline(slo["min_rps"], color="red", linestyle=":",
                               label=f"SLO ≥ {slo['min_rps']:g} req/s")  # fmt: skip
    latency.set_yscale("log")
    latency.set_ylabel("response time (ms)")
    latency.set_title(title)
    latency.legend(fontsize="small")
    latency.grid(True, which="both", alpha=0.3)
    throughput.set_xscale("log", base=2)
    every_count = sorted({s["users"] for f in runs.values() for s in f["steps"]})
    throughput.set_xticks(every_count, [str(count) for count in every_count])
    throughput.set_xlabel("concurrent users (closed loop: each sends its next request on answer)")
    throughput.set_ylabel("requests/s")
    throughput.legend(fontsize="small")
    throughput.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def draw_generator(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    """results: one per generator variant (kit.generator_run): where the CPU went, in cores and
    per request, and the throughput it bought."""
    figure, (cores, per_request, throughput) = plt.subplots(1, 3, figsize=(13, 4.5))
    labels = [r["label"] for r in results]
    at = range(len(results))
    for axes, key, unit in ((cores, "cores", "CPU (cores busy)"),
                            (per_request, "us_per_request", "CPU µs per request")):  # fmt: skip
        axes.bar([x - 0.2 for x in at], [r[f"locust_{key}"] for r in results], 0.4, label="Locust")
        axes.bar([x + 0.2 for x in at], [r[f"target_{key}"] for r in results], 0.4, label="target")
        axes.set_xticks(list(at), labels, fontsize="small")
        axes.set_ylabel(unit)
    cores.axhline(1.0, color="grey", linestyle=":", label="one core")
    cores.legend(fontsize="small")
    throughput.bar(list(at), [r["rps"] for r in results], 0.5, color="tab:green")
    throughput.set_xticks(list(at), labels, fontsize="small")
    throughput.set_ylabel("requests/s")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
