"""The parts on their own: validation by reason, the data version, the settings."""

import numpy as np
import pytest
from mlflow.exceptions import RestException
from pydantic import ValidationError

from shared import tracking
from training_patterns.batch_training import data
from training_patterns.batch_training.settings import SchedulerSettings, TrainerSettings

LABELS = ["setosa", "versicolor", "virginica"]
GOOD = {"sepal_length": "5.1", "sepal_width": "3.5", "petal_length": "1.4", "petal_width": "0.2"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sepal_length": "5,1"}, "sepal_length: not a number"),
        ({"petal_width": ""}, "petal_width: empty"),
        ({"petal_width": "  "}, "petal_width: empty"),
        ({"sepal_width": "nan"}, "sepal_width: not finite"),
        ({"sepal_width": "inf"}, "sepal_width: not finite"),
        ({"petal_length": "14"}, "petal_length: out of range"),
        ({"petal_length": "-1.4"}, "petal_length: out of range"),
        ({"petal_length": "0"}, "petal_length: out of range"),
        ({"species": "SETOSA?"}, "species: unknown label"),
    ],
)
def test_validate_rejects_a_bad_row_naming_the_reason(change: dict[str, str], reason: str) -> None:
    rows = [{**GOOD, "species": "setosa"}, {**GOOD, "species": "setosa", **change}]

    result = data.validate(rows, LABELS)

    assert result.features == [[5.1, 3.5, 1.4, 0.2]]
    assert result.labels == [0]
    assert result.rejected == [{"row": 2, "reason": reason, "values": rows[1]}]


def test_bundled_rows_corrupt_one_row_in_every_bad_every() -> None:
    clean = data.validate(data.bundled_rows(0), LABELS)
    dirty = data.validate(data.bundled_rows(15), LABELS)

    assert (len(clean.labels), len(clean.rejected)) == (150, 0)
    assert (len(dirty.labels), len(dirty.rejected)) == (140, 10)
    assert sum(dirty.reasons.values()) == 10 and len(dirty.reasons) == 5


def test_read_csv_of_another_shape_is_an_error_naming_the_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "rows.csv"
    source.write_text("sepal_length,sepal_width\n5.1,3.5\n")

    with pytest.raises(ValueError, match="no column petal_length, petal_width, species"):
        data.read_csv(source)


def test_read_csv_gives_back_what_write_csv_wrote(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = data.bundled_rows(15)

    data.write_csv(tmp_path / "rows.csv", rows)

    assert data.read_csv(tmp_path / "rows.csv") == rows


def test_data_version_changes_with_any_row_and_only_with_the_rows() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 2, 0])
    changed = x.copy()
    changed[2, 1] += 0.5

    assert tracking.data_version(x, y) == tracking.data_version(x.copy(), y.copy())
    assert tracking.data_version(x, y) != tracking.data_version(changed, y)
    assert tracking.data_version(x, y) != tracking.data_version(x, y[::-1].copy())
    assert tracking.data_version(x, y) != tracking.data_version(x.astype(np.float64), y)


def test_code_version_is_the_git_revision() -> None:
    version = tracking.code_version()

    assert len(version.removesuffix("-dirty")) == 40


def test_code_version_without_git_is_unknown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert tracking.code_version(tmp_path) == "unknown"


def test_settings_refuse_a_bad_schedule_and_an_impossible_gate() -> None:
    with pytest.raises(ValidationError, match="not a cron expression"):
        SchedulerSettings(schedule="every day")
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        TrainerSettings(min_accuracy=1.5)


class AliasRace:
    """An MLflow client whose first alias call loses the insert race to another job."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.calls.append((name, alias, version))
        if len(self.calls) == 1:
            raise RestException(  # type: ignore[no-untyped-call]
                {"error_code": "BAD_REQUEST", "message": "duplicate key value violates unique "
                 'constraint "registered_model_alias_pk"'}
            )  # fmt: skip


def test_set_alias_tries_again_when_another_job_set_it_meanwhile() -> None:
    client = AliasRace()

    tracking.set_alias(client, "iris", "champion", 7)  # type: ignore[arg-type]

    assert client.calls == [("iris", "champion", "7")] * 2
