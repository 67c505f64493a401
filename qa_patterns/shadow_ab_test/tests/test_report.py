"""The report: A's and B's records joined on the request id, compared row by row."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from qa_patterns.shadow_ab_test.report import compare, main, percentile
from shared.inference_log import InferenceRecord, connect_database, write_records
from shared.schemas import Prediction


def record(request_id: str, variant: str, labels: list[str], latency_ms: float) -> InferenceRecord:
    return InferenceRecord(
        request_id=request_id,
        variant=variant,
        model_version="1.0.0",
        rows=[[5.1, 3.5, 1.4, 0.2]] * len(labels),
        predictions=[Prediction(label=label, probabilities={label: 1.0}) for label in labels],
        latency_ms=latency_ms,
        recorded_at=datetime.now(UTC),
    )


RECORDS = [
    record("r1", "a", ["setosa", "versicolor"], 1.0),
    record("r1", "b", ["setosa", "virginica"], 10.0),
    record("r2", "a", ["virginica"], 2.0),
    record("r2", "b", ["virginica"], 20.0),
    record("r3", "a", ["setosa"], 3.0),  # B never recorded this one
]


def test_compare_joins_on_the_request_id_and_counts_agreement_and_confusion() -> None:
    c = compare(RECORDS)

    assert (c.requests, c.only_a, c.only_b) == (2, 1, 0)
    assert (c.rows, c.agreeing) == (3, 2)
    assert c.agreement == pytest.approx(2 / 3)
    assert c.labels == ["setosa", "versicolor", "virginica"]
    assert c.confusion == {
        ("setosa", "setosa"): 1,
        ("versicolor", "virginica"): 1,
        ("virginica", "virginica"): 1,
    }
    assert c.percentiles("a")[50] == 2.0
    assert c.percentiles("b")[50] == 15.0


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 90) == 90


def test_the_command_prints_the_comparison_and_writes_a_page_with_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'inferences.db'}"
    engine = connect_database(url)
    write_records(engine, RECORDS)
    engine.dispose()
    out = tmp_path / "report.html"

    assert main(["--database-url", url, "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "requests answered by both: 2 (by a only: 1, by b only: 0)" in printed
    assert "agreement: 2 of 3 rows (66.7%)" in printed
    page = out.read_text()
    assert page.count("<svg") == 2  # the confusion matrix and the latency distributions
    assert "agreement 66.7%" in page


def test_the_command_says_so_when_nothing_is_comparable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"

    assert main(["--database-url", url, "--out", str(tmp_path / "r.html")]) == 1
