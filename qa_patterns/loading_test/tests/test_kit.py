"""The kit's pieces without a server: durations, the chart and its SLO line."""

import numpy as np
import pytest
from matplotlib.lines import Line2D

from qa_patterns.loading_test.chart import steps_figure
from qa_patterns.loading_test.kit import seconds, table


def figures(p99s: list[float], slo_p99: float = 50) -> dict[str, object]:
    return {
        "slo": {"p99_ms": slo_p99, "max_error_rate": 0.001, "min_rps": 100, "p99_ms_of": {}},
        "steps": [
            {"users": 2**i, "rps": 100.0 * (i + 1), "p50_ms": p99 / 4, "p90_ms": p99 / 2,
             "p99_ms": p99, "error_rate": 0.0, "meets_slo": p99 <= slo_p99}
            for i, p99 in enumerate(p99s)
        ],
    }  # fmt: skip


def xy(line: Line2D) -> tuple[list[float], list[float]]:
    return (
        np.asarray(line.get_xdata(), dtype=float).tolist(),
        np.asarray(line.get_ydata(), dtype=float).tolist(),
    )


def test_seconds_reads_locust_durations() -> None:
    assert seconds("30s") == 30
    assert seconds("2m") == 120
    assert seconds("1h30m") == 5400
    assert seconds("90") == 90
    with pytest.raises(ValueError, match="not a duration"):
        seconds("soon")


def test_step_chart_draws_each_run_against_the_slo_line() -> None:
    runs = {"1 worker": figures([5, 20, 80]), "2 workers": figures([4, 10, 30])}

    figure = steps_figure(runs, "title")

    latency = figure.axes[0]
    lines = {line.get_gid(): line for line in latency.get_lines() if line.get_gid()}
    assert xy(lines["slo"])[1] == [50, 50]
    assert xy(lines["p99 1 worker"]) == ([1, 2, 4], [5, 20, 80])
    assert xy(lines["p99 2 workers"]) == ([1, 2, 4], [4, 10, 30])


def test_table_says_which_steps_break_the_slo() -> None:
    rows = table(figures([5, 80])).splitlines()

    assert rows[1].endswith("met")
    assert rows[2].endswith("broken")
