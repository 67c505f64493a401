"""Where the training rows come from, and the validation that filters the bad ones.

The source is a CSV file of iris rows (what a data warehouse export looks like: every value a
string) or, by default, the iris data set bundled with scikit-learn with one row in every
BAD_EVERY corrupted the ways real exports go wrong: a decimal comma, an empty cell, a value in
millimetres, a label misspelt, NaN. Validation keeps the rows that parse and are in range, and
counts the others by reason: a bad row is filtered, never a crash.
"""

import csv
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.training import iris_dataset

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABEL = "species"
COLUMNS = [*FEATURES, LABEL]
# A measurement outside this range (centimetres) is an error of the source, not a flower.
LOW_CM, HIGH_CM = 0.0, 10.0  # iris's largest is 7.9

Row = dict[str, str]


def bundled_rows(bad_every: int) -> list[Row]:
    """Iris as strings, with row i (1-based) corrupted when bad_every divides it."""
    data = iris_dataset()
    rows = [
        {**{f: f"{v:.1f}" for f, v in zip(FEATURES, x, strict=True)}, LABEL: data.labels[y]}
        for x, y in zip(data.x, data.y, strict=True)
    ]
    corruptions: list[tuple[str, Callable[[str], str]]] = [
        ("sepal_length", lambda v: v.replace(".", ",")),  # a decimal comma: not a number
        ("petal_width", lambda v: ""),  # an empty cell
        ("petal_length", lambda v: f"{float(v) * 10:.0f}"),  # millimetres: out of range
        (LABEL, lambda v: v.upper() + "?"),  # a label the model does not know
        ("sepal_width", lambda v: "nan"),  # parses, but is no measurement
    ]
    bad = range(bad_every - 1, len(rows), bad_every) if bad_every > 0 else range(0)
    for number, index in enumerate(bad):
        column, corrupt = corruptions[number % len(corruptions)]
        rows[index][column] = corrupt(rows[index][column])
    return rows


def read_csv(path: Path) -> list[Row]:
    """The rows of a CSV file with the iris columns (a missing column is a failed gather)."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (has {reader.fieldnames})")
        return [{c: row[c] or "" for c in COLUMNS} for row in reader]


def write_csv(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class Validated:
    """The rows that passed, as numbers, and what was wrong with the others."""

    features: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)  # line, reason, row

    @property
    def reasons(self) -> Counter[str]:
        return Counter(str(r["reason"]) for r in self.rejected)


def validate(rows: list[Row], labels: list[str]) -> Validated:
    """Keep each row whose features are numbers in range and whose label is known."""
    result = Validated()
    for line, row in enumerate(rows, 1):
        reason, values = _check(row, labels)
        if reason:
            result.rejected.append({"row": line, "reason": reason, "values": row})
            continue
        result.features.append(values)
        result.labels.append(labels.index(row[LABEL]))
    return result


def _check(row: Row, labels: list[str]) -> tuple[str, list[float]]:
    values = []
    for name in FEATURES:
        text = (row.get(name) or "").strip()
        if not text:
            return f"{name}: empty", []
        try:
            value = float(text)
        except ValueError:
            return f"{name}: not a number", []
        if not math.isfinite(value):
            return f"{name}: not finite", []
        if not LOW_CM < value < HIGH_CM:
            return f"{name}: out of range", []
        values.append(value)
    if row.get(LABEL) not in labels:
        return f"{LABEL}: unknown label", []
    return "", values
