"""The report's KPI, significance test and decision, over predictions and events made here."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from scipy.stats import norm

from qa_patterns.online_ab_test.events_store import StoredEvent
from qa_patterns.online_ab_test.report import (
    compare,
    decide,
    html_page,
    kpi_by_variant,
    summary,
    wilson_interval,
)
from shared.inference_log import InferenceRecord
from shared.schemas import Prediction

START = datetime(2026, 12, 1, tzinfo=UTC)


def trial(
    rates: dict[str, float], n: int, seed: int = 7
) -> tuple[list[InferenceRecord], list[StoredEvent]]:
    """n predictions per variant; a conversion follows each with the variant's rate."""
    rng = random.Random(seed)
    inferences, events = [], []
    for i in range(n):
        for variant, rate in rates.items():
            request_id = f"{variant}-{i}"
            at = START + timedelta(milliseconds=10 * i)
            inferences.append(
                InferenceRecord(
                    request_id=request_id,
                    variant=variant,
                    model_version="1.0.0",
                    rows=[[5.1, 3.5, 1.4, 0.2]],
                    predictions=[Prediction(label="setosa", probabilities={"setosa": 1.0})],
                    latency_ms=1.0 + (variant == "b"),
                    recorded_at=at,
                )
            )
            if rng.random() < rate:
                events.append(StoredEvent(request_id=request_id, user_id=f"u{i}", received_at=at))
    return inferences, events


def test_the_kpi_of_each_variant_counts_the_conversions_that_follow_its_predictions() -> None:
    inferences, events = trial({"a": 0.3, "b": 0.2}, 1000)
    extra = StoredEvent(request_id="nobody", received_at=START)  # follows no prediction
    other = StoredEvent(request_id="a-0", event="click", received_at=START)  # not the KPI's

    kpis = kpi_by_variant(inferences, [*events, extra, other])

    assert kpis["a"].predictions == kpis["b"].predictions == 1000
    assert kpis["a"].conversions == sum(e.request_id.startswith("a-") for e in events)
    assert kpis["b"].conversions == sum(e.request_id.startswith("b-") for e in events)
    assert 0.25 < kpis["a"].rate < 0.35 and 0.15 < kpis["b"].rate < 0.25
    assert kpis["a"].ci_low < kpis["a"].rate < kpis["a"].ci_high
    assert kpis["b"].latency_p50_ms == 2.0


def test_a_worse_b_is_significant_and_the_decision_is_to_roll_it_back() -> None:
    inferences, events = trial({"a": 0.3, "b": 0.2}, 1000)
    comparison = compare(*kpi_by_variant(inferences, events).values())

    assert comparison.difference < 0
    assert comparison.p_value < 0.001 and comparison.fisher_p_value < 0.001
    assert comparison.difference_ci[1] < 0
    assert decide(comparison) == "roll back B"


def test_the_chi_square_p_value_is_the_two_proportion_z_tests() -> None:
    inferences, events = trial({"a": 0.3, "b": 0.25}, 800)
    comparison = compare(*kpi_by_variant(inferences, events).values())
    a, b = comparison.a, comparison.b
    pooled = (a.conversions + b.conversions) / (a.predictions + b.predictions)
    se = (pooled * (1 - pooled) * (1 / a.predictions + 1 / b.predictions)) ** 0.5

    assert comparison.p_value == pytest.approx(2 * norm.sf(abs(b.rate - a.rate) / se), rel=1e-9)


def test_equal_variants_are_not_significant_and_the_test_goes_on() -> None:
    inferences, events = trial({"a": 0.3, "b": 0.3}, 1000, seed=3)
    comparison = compare(*kpi_by_variant(inferences, events).values())

    assert comparison.p_value > 0.05
    assert decide(comparison) == "keep testing"


def test_a_better_b_is_shipped_and_too_few_predictions_decide_nothing() -> None:
    inferences, events = trial({"a": 0.2, "b": 0.3}, 1000)
    few, few_events = trial({"a": 0.0, "b": 1.0}, 20)

    assert decide(compare(*kpi_by_variant(inferences, events).values())) == "ship B"
    assert decide(compare(*kpi_by_variant(few, few_events).values())) == "keep testing"


def test_wilson_interval_holds_the_rate_and_stays_within_0_and_1() -> None:
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    low, high = wilson_interval(30, 100)
    assert low < 0.3 < high and high - low < 0.2


def test_the_page_holds_the_table_and_three_charts() -> None:
    inferences, events = trial({"a": 0.3, "b": 0.2}, 300)
    kpis = kpi_by_variant(inferences, events)
    text = summary(kpis, compare(kpis["a"], kpis["b"]), unmatched=0)

    page = html_page(text, kpis, inferences, {e.request_id for e in events}, START)

    assert page.count("data:image/png;base64,") == 3
    assert "decision at alpha 0.05: roll back B" in page
