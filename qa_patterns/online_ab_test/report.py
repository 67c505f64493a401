"""Online A/B test pattern, the report: the KPI of each variant, and whether B differs from A.

The model servers recorded each prediction with its variant (the `inferences` table of
shared/inference_log.py); clients reported what users did next (the `client_events` table,
events_store.py). Joined on request id, each prediction is a trial and a conversion after it a
success: the KPI is the conversion rate per variant, with a 95 % Wilson interval. B against A is
Pearson's chi-square test on the 2x2 table (converted or not, by variant; scipy's
chi2_contingency without continuity correction, the two-proportion z-test), with Fisher's exact
test beside it for small counts. `decide` turns that into the A/B test's decision: keep
testing, ship B, or roll back (B significantly worse: set its weight to 0, split.rollback);
`guard` (or --roll-back-at) is that kill switch, acting on the decision.

The terminal gets a table; --html writes a page with the charts inline (PNG), under reports/.

    .venv/bin/python -m qa_patterns.online_ab_test.report --html reports/online-ab-test.html
"""

import argparse
import base64
import html
import io
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from qa_patterns.online_ab_test import events_store
from qa_patterns.online_ab_test.events_store import StoredEvent
from qa_patterns.online_ab_test.split import rollback
from shared.inference_log import InferenceRecord, connect_database, read_inferences

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///.local/online_ab_test/inferences.db"
Decision = Literal["keep testing", "ship B", "roll back B"]


@dataclass(frozen=True)
class VariantKPI:
    variant: str
    predictions: int
    conversions: int
    ci_low: float  # 95 % Wilson interval of the rate
    ci_high: float
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def rate(self) -> float:
        return self.conversions / self.predictions if self.predictions else 0.0


@dataclass(frozen=True)
class Comparison:
    """B against A (the baseline)."""

    a: VariantKPI
    b: VariantKPI
    difference: float  # B's rate minus A's
    difference_ci: tuple[float, float]  # 95 %, normal approximation
    relative_lift: float | None  # difference / A's rate
    chi2: float
    p_value: float  # Pearson's chi-square, two-sided
    fisher_p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def converted_requests(events: Iterable[StoredEvent], event: str = "conversion") -> set[str]:
    return {e.request_id for e in events if e.event == event}


def kpi_by_variant(
    inferences: Sequence[InferenceRecord], events: Iterable[StoredEvent], event: str = "conversion"
) -> dict[str, VariantKPI]:
    """Each variant's predictions, the conversions that followed them, and its latency."""
    converted = converted_requests(events, event)
    predictions: Counter[str] = Counter()
    conversions: Counter[str] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)
    for record in inferences:
        predictions[record.variant] += 1
        conversions[record.variant] += record.request_id in converted
        latencies[record.variant].append(record.latency_ms)
    kpis = {}
    for variant in sorted(predictions):
        n, k = predictions[variant], conversions[variant]
        low, high = wilson_interval(k, n)
        kpis[variant] = VariantKPI(
            variant,
            n,
            k,
            low,
            high,
            percentile(latencies[variant], 50),
            percentile(latencies[variant], 99),
        )
    return kpis


def compare(a: VariantKPI, b: VariantKPI) -> Comparison:
    """B against A: the difference of the rates and its significance."""
    from scipy.stats import chi2_contingency, fisher_exact

    table = [
        [a.conversions, a.predictions - a.conversions],
        [b.conversions, b.predictions - b.conversions],
    ]
    if min(a.predictions, b.predictions) == 0 or a.conversions + b.conversions in (
        0,
        a.predictions + b.predictions,
    ):
        chi2, p_value = 0.0, 1.0  # nothing to test: one side empty, or all alike
    else:
        result = chi2_contingency(table, correction=False)
        chi2, p_value = float(result.statistic), float(result.pvalue)
    fisher_p = float(fisher_exact(table).pvalue) if min(a.predictions, b.predictions) else 1.0
    difference = b.rate - a.rate
    se = math.sqrt(
        (a.rate * (1 - a.rate) / a.predictions if a.predictions else 0)
        + (b.rate * (1 - b.rate) / b.predictions if b.predictions else 0)
    )
    return Comparison(
        a,
        b,
        difference,
        (difference - 1.959964 * se, difference + 1.959964 * se),
        difference / a.rate if a.rate else None,
        chi2,
        p_value,
        fisher_p,
    )


def decide(comparison: Comparison, alpha: float = 0.05, min_predictions: int = 100) -> Decision:
    """The test's decision: roll B back when it converts significantly worse than A, ship it
    when significantly better, else keep testing (too few predictions, or no difference yet)."""
    if min(comparison.a.predictions, comparison.b.predictions) < min_predictions:
        return "keep testing"
    if not comparison.significant(alpha):
        return "keep testing"
    return "ship B" if comparison.difference > 0 else "roll back B"


def summary(
    kpis: dict[str, VariantKPI],
    comparison: Comparison | None,
    unmatched: int,
    latency: bool = False,
) -> str:
    """The terminal's table (with `latency`, each model's own time per prediction too: the
    page shows it, the terminal leaves it out so that a run's output is the same every time)."""
    header = f"{'variant':<8}{'predictions':>12}{'conversions':>13}{'rate':>8}{'95% CI':>17}"
    lines = [header + (f"{'p50 ms':>9}{'p99 ms':>9}" if latency else "")]
    for k in kpis.values():
        row = (
            f"{k.variant:<8}{k.predictions:>12}{k.conversions:>13}{k.rate:>8.1%}"
            f"{f'{k.ci_low:.1%} - {k.ci_high:.1%}':>17}"
        )
        lines.append(row + (f"{k.latency_p50_ms:>9.2f}{k.latency_p99_ms:>9.2f}" if latency else ""))
    if comparison is not None:
        low, high = comparison.difference_ci
        lift = f"{comparison.relative_lift:+.1%}" if comparison.relative_lift is not None else "-"
        lines += [
            f"B - A: {comparison.difference:+.1%} (95% CI {low:+.1%} to {high:+.1%}), "
            f"relative {lift}",
            f"chi-square {comparison.chi2:.2f}, p = {comparison.p_value:.4f} "
            f"(Fisher's exact p = {comparison.fisher_p_value:.4f})",
            f"decision at alpha 0.05: {decide(comparison)}",
        ]
    if unmatched:
        lines.append(f"{unmatched} events follow no recorded prediction (not counted)")
    return "\n".join(lines) + "\n"


def _png(figure: object) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode()


def charts(
    kpis: dict[str, VariantKPI], inferences: Sequence[InferenceRecord], converted: set[str]
) -> list[tuple[str, str]]:
    """(title, base64 PNG) of each chart: the KPI with its interval, the traffic share over
    time (a weight change shows), and the cumulative KPI over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"a": "#4c72b0", "b": "#dd8452"}
    out = []

    figure, axis = plt.subplots(figsize=(5, 3.2))
    names = list(kpis)
    rates = [kpis[v].rate * 100 for v in names]
    errors = [
        [(kpis[v].rate - kpis[v].ci_low) * 100 for v in names],
        [(kpis[v].ci_high - kpis[v].rate) * 100 for v in names],
    ]
    axis.bar(names, rates, yerr=errors, capsize=8, color=[colours.get(v, "grey") for v in names])
    for i, v in enumerate(names):
        axis.annotate(
            f"{rates[i]:.1f} %\nn={kpis[v].predictions}",
            (i, rates[i]),
            textcoords="offset points",
            xytext=(24, 0),
            fontsize=8,
        )
    axis.set_ylabel("conversion rate (%), 95 % CI")
    axis.set_title("KPI per variant")
    out.append(("Conversion rate per variant", _png(figure)))
    plt.close(figure)

    if inferences:
        start = inferences[0].recorded_at
        seconds = [(r.recorded_at - start).total_seconds() for r in inferences]
        span = max(seconds[-1], 1e-9)
        bins = min(30, max(1, len(inferences) // 50))
        edges = [span * i / bins for i in range(bins + 1)]
        counts: dict[str, list[int]] = {v: [0] * bins for v in kpis}
        for record, second in zip(inferences, seconds, strict=True):
            counts[record.variant][min(bins - 1, int(second / span * bins))] += 1
        totals = [sum(counts[v][i] for v in counts) or 1 for i in range(bins)]
        figure, axis = plt.subplots(figsize=(6, 3.2))
        bottom = [0.0] * bins
        for v in counts:
            share = [100 * c / t for c, t in zip(counts[v], totals, strict=True)]
            axis.bar(
                edges[:-1],
                share,
                width=span / bins,
                bottom=bottom,
                align="edge",
                label=v,
                color=colours.get(v, "grey"),
            )
            bottom = [b + s for b, s in zip(bottom, share, strict=True)]
        axis.set_xlabel("seconds since the first prediction")
        axis.set_ylabel("share of predictions (%)")
        axis.set_title("Traffic per variant over time")
        axis.legend()
        out.append(("Traffic share over time", _png(figure)))
        plt.close(figure)

        figure, axis = plt.subplots(figsize=(6, 3.2))
        for v in kpis:
            xs, ys, n, k = [], [], 0, 0
            for record, second in zip(inferences, seconds, strict=True):
                if record.variant == v:
                    n += 1
                    k += record.request_id in converted
                    xs.append(second)
                    ys.append(100 * k / n)
            axis.plot(xs, ys, label=v, color=colours.get(v, "grey"))
        axis.set_xlabel("seconds since the first prediction")
        axis.set_ylabel("conversion rate so far (%)")
        axis.set_title("Cumulative KPI per variant")
        axis.legend()
        out.append(("Cumulative conversion rate", _png(figure)))
        plt.close(figure)
    return out


def html_page(
    text: str,
    kpis: dict[str, VariantKPI],
    inferences: Sequence[InferenceRecord],
    converted: set[str],
    generated: datetime,
) -> str:
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in charts(kpis, inferences, converted)
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Online A/B test report</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "figure{display:inline-block;margin:1em}pre{background:#f4f4f4;padding:1em}</style>"
        "</head><body><h1>Online A/B test report</h1>"
        f"<p>Generated {html.escape(generated.isoformat(timespec='seconds'))}: conversions "
        "per prediction, joined on request id.</p>"
        f"<pre>{html.escape(text)}</pre>{images}</body></html>\n"
    )


def build(
    database_url: str, event: str = "conversion"
) -> tuple[dict[str, VariantKPI], Comparison | None, list[InferenceRecord], set[str], int]:
    """Everything the report shows, from the database."""
    engine = connect_database(database_url)
    try:
        events_engine = events_store.connect(database_url)
        try:
            events = events_store.read_events(events_engine, event)
        finally:
            events_engine.dispose()
        inferences = read_inferences(engine)
    finally:
        engine.dispose()
    kpis = kpi_by_variant(inferences, events, event)
    comparison = compare(kpis["a"], kpis["b"]) if {"a", "b"} <= kpis.keys() else None
    predicted = {r.request_id for r in inferences}
    converted = converted_requests(events, event)
    return kpis, comparison, inferences, converted, len(converted - predicted)


def guard(
    database_url: str,
    proxy_url: str,
    alpha: float = 0.05,
    min_predictions: int = 100,
    event: str = "conversion",
) -> Decision:
    """The kill switch: decide from what is recorded so far, and when B converts significantly
    worse than A, set its weight to 0 at the proxy (split.rollback) at once."""
    _, comparison, *_ = build(database_url, event)
    if comparison is None:
        return "keep testing"
    decision = decide(comparison, alpha, min_predictions)
    if decision == "roll back B":
        rollback(proxy_url)
        logger.warning(
            "B rolled back: conversion %.1f %% against A's %.1f %% (p = %.4f)",
            100 * comparison.b.rate,
            100 * comparison.a.rate,
            comparison.p_value,
        )
    return decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The online A/B test's KPI per variant")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ONLINE_AB_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="the inferences and events (default: ONLINE_AB_TEST_DATABASE_URL, else %(default)s)",
    )
    parser.add_argument("--event", default="conversion", help="the event that counts")
    parser.add_argument("--html", type=Path, help="also write the page with charts here")
    parser.add_argument(
        "--roll-back-at",
        metavar="PROXY_URL",
        help="the kill switch: set B's weight to 0 at this proxy when B is significantly worse",
    )
    args = parser.parse_args(argv)
    kpis, comparison, inferences, converted, unmatched = build(args.database_url, args.event)
    sys.stdout.write(summary(kpis, comparison, unmatched))
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        text = summary(kpis, comparison, unmatched, latency=True)
        page = html_page(text, kpis, inferences, converted, datetime.now().astimezone())
        args.html.write_text(page)
        sys.stdout.write(f"wrote {args.html}\n")
    if args.roll_back_at and comparison is not None and decide(comparison) == "roll back B":
        guard(args.database_url, args.roll_back_at, event=args.event)
        sys.stdout.write(f"B's weight set to 0 at {args.roll_back_at}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
