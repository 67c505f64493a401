"""Shadow A/B test pattern, the report: what A and B answered to the same requests, compared.

It reads the inferences table (both model servers' records, joined on the request id) and
prints, then writes as an HTML page with charts (inline SVG, nothing fetched):

- how many requests both answered, and how many only one of them did (copies B missed);
- the agreement rate: the share of rows where B's label is A's;
- the confusion between A and B: for each label A gave, the labels B gave to the same rows;
- each model's latency percentiles (p50, p90, p99), as its server measured them.

    .venv/bin/python -m qa_patterns.shadow_ab_test.report            # the recorder's database
    .venv/bin/python -m qa_patterns.shadow_ab_test.report --database-url sqlite:///x.db
"""

import argparse
import html
import io
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qa_patterns.shadow_ab_test.settings import RecorderSettings
from shared.inference_log import InferenceRecord, connect_database, read_inferences

PERCENTILES = (50, 90, 99)
DEFAULT_OUT = Path("reports/shadow_ab_test.html")


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    requests: int  # answered by both
    only_a: int  # answered by A alone: copies B never recorded
    only_b: int
    rows: int
    agreeing: int
    labels: list[str]
    confusion: dict[tuple[str, str], int]  # (A's label, B's label) -> rows
    latency_ms: dict[str, list[float]]  # variant -> each request's latency

    @property
    def agreement(self) -> float:
        return self.agreeing / self.rows if self.rows else float("nan")

    def percentiles(self, variant: str) -> dict[int, float]:
        return {p: percentile(self.latency_ms[variant], p) for p in PERCENTILES}


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linear between the nearest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def compare(records: Sequence[InferenceRecord], a: str = "a", b: str = "b") -> Comparison:
    """A's and B's records joined on the request id, row by row."""
    by_request: dict[str, dict[str, InferenceRecord]] = {}
    for record in records:
        by_request.setdefault(record.request_id, {})[record.variant] = record
    confusion: Counter[tuple[str, str]] = Counter()
    latency: dict[str, list[float]] = {a: [], b: []}
    requests = only_a = only_b = 0
    for answers in by_request.values():
        for variant in (a, b):
            if variant in answers:
                latency[variant].append(answers[variant].latency_ms)
        if a in answers and b in answers:
            requests += 1
            pairs = zip(answers[a].predictions, answers[b].predictions, strict=True)
            confusion.update((pa.label, pb.label) for pa, pb in pairs)
        elif a in answers:
            only_a += 1
        elif b in answers:
            only_b += 1
    labels = sorted({label for pair in confusion for label in pair})
    return Comparison(
        a=a,
        b=b,
        requests=requests,
        only_a=only_a,
        only_b=only_b,
        rows=sum(confusion.values()),
        agreeing=sum(n for (la, lb), n in confusion.items() if la == lb),
        labels=labels,
        confusion=dict(confusion),
        latency_ms=latency,
    )


def text(c: Comparison) -> str:
    """The comparison as the command prints it."""
    lines = [
        f"requests answered by both: {c.requests} (by {c.a} only: {c.only_a}, "
        f"by {c.b} only: {c.only_b})",
        f"agreement: {c.agreeing} of {c.rows} rows ({c.agreement:.1%})",
        f"confusion (rows: {c.a}'s label, columns: {c.b}'s label):",
    ]
    width = max([len(label) for label in c.labels] + [6])
    lines.append(" " * width + "".join(f"  {label:>{width}}" for label in c.labels))
    for la in c.labels:
        counts = "".join(f"  {c.confusion.get((la, lb), 0):>{width}}" for lb in c.labels)
        lines.append(f"{la:<{width}}{counts}")
    lines.append("latency ms " + "".join(f"{f'p{p}':>12}" for p in PERCENTILES))
    for variant in (c.a, c.b):
        values = c.percentiles(variant)
        # Six decimals: a reader's own run differs here, and its README masks such figures.
        lines.append(f"{variant:<11}" + "".join(f"{values[p]:>12.6f}" for p in PERCENTILES))
    return "\n".join(lines)


def charts(c: Comparison) -> tuple[str, str]:
    """The confusion matrix and the latency distributions, as SVG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    def svg(figure: "matplotlib.figure.Figure") -> str:
        out = io.StringIO()
        figure.savefig(out, format="svg", bbox_inches="tight")
        plt.close(figure)
        document = out.getvalue()
        return document[document.index("<svg") :]  # inline: no XML prolog in HTML

    figure, axes = plt.subplots(figsize=(5, 4))
    matrix = [[c.confusion.get((la, lb), 0) for lb in c.labels] for la in c.labels]
    image = axes.imshow(matrix or [[0]], cmap="Blues")
    axes.set_xticks(range(len(c.labels)), c.labels, rotation=30)
    axes.set_yticks(range(len(c.labels)), c.labels)
    axes.set_xlabel(f"{c.b}'s label")
    axes.set_ylabel(f"{c.a}'s label")
    axes.set_title(f"Rows by label: agreement {c.agreement:.1%}")
    most = max((n for row in matrix for n in row), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            color = "white" if n > most / 2 else "black"  # readable on dark cells too
            axes.text(j, i, str(n), ha="center", va="center", color=color)
    figure.colorbar(image, ax=axes)
    confusion_svg = svg(figure)

    figure, axes = plt.subplots(figsize=(6, 4))
    for variant in (c.a, c.b):
        values = sorted(c.latency_ms[variant])
        if values:
            share = [(i + 1) / len(values) for i in range(len(values))]
            axes.step(values, share, where="post", label=f"{variant} (n={len(values)})")
    axes.set_xscale("log")
    axes.set_xlabel("latency at the model server, ms (log)")
    axes.set_ylabel("share of requests at or below")
    axes.set_title("Latency of each model")
    axes.grid(True, alpha=0.3)
    axes.legend()
    latency_svg = svg(figure)
    return confusion_svg, latency_svg


def page(c: Comparison) -> str:
    confusion_svg, latency_svg = charts(c)
    rows = "".join(
        f"<tr><th>{html.escape(v)}</th>"
        + "".join(f"<td>{value:.3f}</td>" for value in c.percentiles(v).values())
        + "</tr>"
        for v in (c.a, c.b)
    )
    heads = "".join(f"<th>p{p}</th>" for p in PERCENTILES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shadow A/B test: {c.a} against {c.b}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:.2em .8em;text-align:right}} figure{{display:inline-block;margin:1em}}</style>
</head><body>
<h1>Shadow A/B test: {html.escape(c.a)} (answers the clients) against {html.escape(c.b)}
(in the shadow)</h1>
<p>Requests answered by both: <b>{c.requests}</b> (by {c.a} only: {c.only_a}, by {c.b} only:
{c.only_b}). Agreement: <b>{c.agreeing} of {c.rows} rows ({c.agreement:.1%})</b>.</p>
<figure>{confusion_svg}</figure>
<figure>{latency_svg}</figure>
<h2>Latency at the model servers, ms</h2>
<table><tr><th></th>{heads}</tr>{rows}</table>
<pre>{html.escape(text(c))}</pre>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=None,
        help="the inference database (default: the recorder's)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the HTML page to write")
    parser.add_argument("--a", default="a", help="the variant whose answers the clients get")
    parser.add_argument("--b", default="b", help="the variant in the shadow")
    args = parser.parse_args(argv)
    engine = connect_database(args.database_url or RecorderSettings().database_url)
    try:
        records = read_inferences(engine)
    finally:
        engine.dispose()
    comparison = compare(records, args.a, args.b)
    if not comparison.requests:
        sys.stderr.write("no request answered by both models recorded yet\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(comparison))
    sys.stdout.write(f"{text(comparison)}\nwritten to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
