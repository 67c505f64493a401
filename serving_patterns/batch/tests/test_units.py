"""Pure logic of the batch pattern: input checks, the deadline, the schedule, the demo data."""

import math
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serving_patterns.batch.job import to_features
from serving_patterns.batch.scheduler import next_tick
from serving_patterns.batch.seed import demo_rows
from serving_patterns.batch.settings import JobSettings, SchedulerSettings


def test_to_features_keeps_ids_and_values_of_good_rows() -> None:
    ids, x, reasons = to_features([(7, 5.1, 3.5, 1.4, 0.2), (2**62, 6.7, 3.0, 5.2, 2.3)])

    assert ids.tolist() == [7, 2**62]  # ids stay exact integers, not floats
    assert x.dtype.name == "float32"
    assert x[1].tolist() == pytest.approx([6.7, 3.0, 5.2, 2.3])
    assert reasons == {}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((1, None, 3.5, 1.4, 0.2), "sepal_length is NULL"),
        ((1, 5.1, math.nan, 1.4, 0.2), "sepal_width is not finite: nan"),
        ((1, 5.1, 3.5, -math.inf, 0.2), "petal_length is not finite: -inf"),
        ((1, 5.1, 3.5, 1.4, -1e39), "petal_width is out of the model's range: -1e+39"),
        ((1, 5.1, "tall", 1.4, 0.2), "sepal_width is not a number: 'tall'"),
        ((1, None, 3.5, math.inf, 0.2), "sepal_length is NULL; petal_length is not finite: inf"),
    ],
)
def test_to_features_names_what_is_wrong_with_a_bad_row(
    row: tuple[object, ...], reason: str
) -> None:
    _, _, reasons = to_features([(0, 5.1, 3.5, 1.4, 0.2), row])

    assert reasons == {1: reason}


def test_deadline_as_a_time_of_day_is_its_next_occurrence() -> None:
    settings = JobSettings(finish_by="06:00")
    early = datetime(2026, 3, 1, 5, 30, tzinfo=UTC)
    late = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)

    assert settings.finish_by == time(6, 0)
    assert settings.deadline(early) == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    assert settings.deadline(late) == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def test_deadline_keeps_an_offset_and_a_full_date() -> None:
    tokyo = JobSettings(finish_by="06:00+09:00").deadline(datetime(2026, 3, 1, 20, 0, tzinfo=UTC))
    fixed = JobSettings(finish_by="2026-03-02T06:00:00").deadline(datetime.now(UTC))

    assert tokyo == datetime(2026, 3, 2, 6, 0, tzinfo=timezone(timedelta(hours=9)))
    assert fixed == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    assert JobSettings().deadline(datetime.now(UTC)) is None


def test_settings_refuse_an_unknown_retry_mode_and_a_bad_chunk_size() -> None:
    with pytest.raises(ValidationError, match="'all', 'failed' or 'none'"):
        JobSettings(retry="sometimes")
    with pytest.raises(ValidationError, match="greater than 0"):
        JobSettings(chunk_size=0)


def test_settings_read_the_environment_and_an_empty_value_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_JOB_RETRY", "none")
    monkeypatch.setenv("BATCH_JOB_FINISH_BY", "")
    monkeypatch.setenv("DATABASE_URL", "postgresql://somewhere/db")

    settings = JobSettings()

    assert (settings.retry, settings.finish_by) == ("none", None)
    assert settings.database_url == "postgresql://somewhere/db"


@pytest.mark.parametrize("number", ["0600", "6", 6, "6.30", "-600", " 600 "])
def test_a_deadline_that_is_a_number_is_refused_not_read_as_a_date_in_1970(number: object) -> None:
    with pytest.raises(ValidationError, match="is not a time of day"):
        JobSettings(finish_by=number)


def test_scheduler_refuses_a_bad_cron_expression() -> None:
    with pytest.raises(ValidationError, match="not a cron expression"):
        SchedulerSettings(schedule="every morning")


def test_next_tick_follows_the_cron_expression() -> None:
    now = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC)

    assert next_tick("*/5 * * * *", now) == datetime(2026, 3, 1, 10, 10, tzinfo=UTC)
    assert next_tick("0 6 * * *", now) == datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    assert next_tick("* * * * * */10", now) == datetime(2026, 3, 1, 10, 7, 40, tzinfo=UTC)


def test_demo_rows_are_the_same_for_the_same_call_with_a_bad_row_every_nth() -> None:
    rows = demo_rows(1, 10, bad_every=4)  # ids 4 and 8: an inf and a NaN (id 12 would get NULL)

    assert rows == demo_rows(1, 10, bad_every=4)
    bad = [
        i + 1
        for i, row in enumerate(rows)
        if not all(v is not None and math.isfinite(v) for v in row)
    ]
    assert bad == [4, 8]
    assert all(
        v is not None and 0.1 <= v <= 9 for row in demo_rows(1, 1000, bad_every=0) for v in row
    )


def test_the_scheduler_does_not_wait_for_the_first_run_to_succeed() -> None:
    # A first run that leaves a failed chunk exits 1; the schedule must start all the same.
    compose = yaml.safe_load((Path(__file__).parents[1] / "compose.yaml").read_text())

    assert "job" not in compose["services"]["scheduler"]["depends_on"]
    assert compose["services"]["scheduler"]["restart"] == "unless-stopped"
