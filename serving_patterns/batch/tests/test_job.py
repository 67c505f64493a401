"""The batch job, run in this process on real SQLite and PostgreSQL databases with the real model.

Faults that the data cannot cause (a model call that raises) come from FlakyModel, which wraps
the real model and raises on chosen calls: the retry modes are about what the job does then.
"""

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, select, update

from serving_patterns.batch import job, storage
from serving_patterns.batch.seed import demo_rows
from serving_patterns.batch.settings import JobSettings
from shared.model import Predictor

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "iris"
SETOSA, VIRGINICA = (5.1, 3.5, 1.4, 0.2), (6.7, 3.0, 5.2, 2.3)


class FlakyModel:
    """The real model, except that the calls `fails` picks (1 = the first call) raise."""

    def __init__(self, fails: Callable[[int], bool]) -> None:
        self.model = Predictor(MODEL_DIR)
        self.card = self.model.card
        self.fails = fails
        self.calls = 0

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fails(self.calls):
            raise RuntimeError(f"injected fault on call {self.calls}")
        return self.model.predict_proba(rows)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = storage.connect(database_url)
    storage.create_tables(engine)
    yield engine
    engine.dispose()


def settings(engine: Engine, **overrides: Any) -> JobSettings:
    url = engine.url.render_as_string(hide_password=False)
    return JobSettings(database_url=url, model_dir=str(MODEL_DIR), **overrides)


def predictions(engine: Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(storage.predictions)).mappings().all()
    return {row["item_id"]: dict(row) for row in rows}


def chunk_log(engine: Engine, run_id: int | None) -> list[tuple[int, int, int, str]]:
    c = storage.chunks.c
    query = select(c.attempt, c.first_id, c.last_id, c.status).where(c.run_id == run_id)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(c.attempt, c.first_id))]


def unpredicted(engine: Engine) -> list[int]:
    done = set(predictions(engine))
    with engine.connect() as conn:
        return [i for i in conn.scalars(select(storage.items.c.id)) if i not in done]


def test_run_fills_a_prediction_for_every_row_lacking_one(engine: Engine) -> None:
    storage.add_items(engine, [SETOSA, VIRGINICA, *demo_rows(3, 48, bad_every=0)])

    report = job.run(settings(engine))

    stored = predictions(engine)
    assert report.status == "done"
    assert report.scored == 50
    assert unpredicted(engine) == []
    assert {row["status"] for row in stored.values()} == {"done"}
    assert stored[1]["label"] == "setosa"
    assert stored[2]["label"] == "virginica"
    assert all(0 < row["probability"] <= 1 for row in stored.values())


def test_rerun_scores_nothing_already_scored_and_duplicates_nothing(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 40, bad_every=0))
    first = job.run(settings(engine, chunk_size=15))
    before = predictions(engine)

    again = job.run(settings(engine, chunk_size=15))

    assert first.scored == 40
    assert (again.status, again.planned_rows, again.scored) == ("done", 0, 0)
    assert predictions(engine) == before  # same rows, same run ids: nothing rescored
    assert chunk_log(engine, again.run_id) == []


def test_rerun_scores_only_the_rows_added_since(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    first = job.run(settings(engine))
    storage.add_items(engine, demo_rows(31, 5, bad_every=0))

    second = job.run(settings(engine))

    stored = predictions(engine)
    assert second.scored == 5
    assert len(stored) == 35
    assert {i for i, row in stored.items() if row["run_id"] == second.run_id} == set(range(31, 36))
    assert {stored[i]["run_id"] for i in range(1, 31)} == {first.run_id}


def test_a_second_process_on_sqlite_exits_with_a_clear_message(tmp_path: Path) -> None:
    # On PostgreSQL a second process joins the run instead: tests/test_shared_runs.py.
    engine = storage.connect(f"sqlite:///{tmp_path / 'batch.db'}")
    storage.create_tables(engine)
    storage.add_items(engine, demo_rows(1, 10, bad_every=0))

    with storage.sqlite_lock(engine) as taken:  # what the first process holds while it runs
        report = job.run(settings(engine))

    assert taken
    assert report.status == "skipped"
    assert "SQLite runs one job process at a time" in report.message
    assert predictions(engine) == {}
    assert job.run(settings(engine)).scored == 10  # the lock went with its holder


def test_bad_rows_are_recorded_as_failed_with_the_reason_and_the_run_goes_on(
    engine: Engine,
) -> None:
    storage.add_items(
        engine,
        [
            SETOSA,
            (5.1, None, 1.4, 0.2),
            (5.1, 3.5, float("inf"), 0.2),
            (5.1, 3.5, 1.4, 1e300),
            VIRGINICA,
        ],
    )

    report = job.run(settings(engine, chunk_size=2))

    stored = predictions(engine)
    assert (report.status, report.scored, report.failed) == ("done", 2, 3)
    statuses = [stored[i]["status"] for i in range(1, 6)]
    assert statuses == ["done", "failed", "failed", "failed", "done"]
    assert stored[2]["error"] == "sepal_width is NULL"
    assert stored[3]["error"] == "petal_length is not finite: inf"
    assert stored[4]["error"] == "petal_width is out of the model's range: 1e+300"
    assert stored[2]["label"] is None and stored[2]["probability"] is None
    assert unpredicted(engine) == []


def test_a_row_whose_scores_overflow_is_recorded_as_failed(engine: Engine) -> None:
    # Finite in float32, but the model's arithmetic overflows: its probabilities come out NaN.
    storage.add_items(engine, [SETOSA, (3e38, 1.0, 1.0, 1.0)])

    report = job.run(settings(engine))

    stored = predictions(engine)
    assert (report.scored, report.failed) == (1, 1)
    assert stored[2]["status"] == "failed"
    assert stored[2]["error"] == "the model returned non-finite probabilities"


def test_a_failed_row_is_scored_by_the_next_run_once_its_data_is_fixed(engine: Engine) -> None:
    storage.add_items(engine, [SETOSA, (5.1, None, 1.4, 0.2)])
    job.run(settings(engine))
    with engine.begin() as conn:
        conn.execute(update(storage.items).where(storage.items.c.id == 2).values(sepal_width=3.5))

    report = job.run(settings(engine))

    stored = predictions(engine)
    assert (report.scored, report.failed) == (1, 0)
    assert stored[2]["status"] == "done"
    assert stored[2]["error"] is None
    assert len(stored) == 2


def test_a_large_range_is_split_into_chunks_of_chunk_size(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 2_500, bad_every=0))
    model = FlakyModel(fails=lambda call: False)

    report = job.run(settings(engine, chunk_size=1_000), model=model)

    assert (report.planned_chunks, report.scored) == (3, 2_500)
    assert model.calls == 3  # one model call per chunk
    assert chunk_log(engine, report.run_id) == [
        (1, 1, 1_000, "done"),
        (1, 1_001, 2_000, "done"),
        (1, 2_001, 2_500, "done"),
    ]


def test_chunks_hold_only_pending_rows(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    job.run(settings(engine))
    with engine.begin() as conn:  # forget the predictions of ids 5..7 and 20..29
        p = storage.predictions.c
        conn.execute(storage.predictions.delete().where(p.item_id.between(5, 7)))
        conn.execute(storage.predictions.delete().where(p.item_id.between(20, 29)))

    report = job.run(settings(engine, chunk_size=10))

    assert chunk_log(engine, report.run_id) == [(1, 5, 26, "done"), (1, 27, 29, "done")]
    assert unpredicted(engine) == []


def test_retry_failed_scores_only_the_failed_chunk_again(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    model = FlakyModel(fails=lambda call: call == 2)

    report = job.run(settings(engine, chunk_size=10, retry="failed"), model=model)

    assert (report.status, report.scored, report.attempts) == ("done", 30, 2)
    assert model.calls == 4
    assert chunk_log(engine, report.run_id) == [
        (1, 1, 10, "done"),
        (1, 11, 20, "failed"),
        (1, 21, 30, "done"),
        (2, 11, 20, "done"),
    ]
    assert unpredicted(engine) == []


def test_a_database_error_while_reading_a_chunk_stays_in_that_chunk(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    real_read, reads = storage.read_chunk, []

    def read_failing_once(conn: Any, run_id: int, chunk: storage.Chunk) -> list[tuple[Any, ...]]:
        reads.append(chunk.first_id)
        if len(reads) == 2:
            # A real driver error; on PostgreSQL it aborts the transaction, as a timeout would.
            conn.connection.driver_connection.execute("SELECT * FROM no_such_table")
        return real_read(conn, run_id, chunk)

    monkeypatch.setattr(storage, "read_chunk", read_failing_once)
    report = job.run(settings(engine, chunk_size=10, retry="failed"))

    assert (report.status, report.scored, report.attempts) == ("done", 30, 2)
    assert chunk_log(engine, report.run_id)[1] == (1, 11, 20, "failed")
    assert unpredicted(engine) == []


def test_retry_all_scores_every_chunk_again(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    model = FlakyModel(fails=lambda call: call == 2)

    report = job.run(settings(engine, chunk_size=10, retry="all"), model=model)

    assert (report.status, report.scored, report.attempts) == ("done", 30, 2)
    assert model.calls == 6
    assert [entry for entry in chunk_log(engine, report.run_id) if entry[0] == 2] == [
        (2, 1, 10, "done"),
        (2, 11, 20, "done"),
        (2, 21, 30, "done"),
    ]
    assert len(predictions(engine)) == 30  # rewritten in place, not duplicated


def test_retry_all_withdraws_the_whole_run_when_a_chunk_keeps_failing(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    model = FlakyModel(fails=lambda call: call % 3 == 2)  # the middle chunk, every pass

    report = job.run(settings(engine, chunk_size=10, retry="all", max_attempts=3), model=model)

    assert (report.status, report.attempts, report.scored, report.unscored) == ("failed", 3, 0, 30)
    assert predictions(engine) == {}  # its rows stand only together: all left for the next run
    assert "3 of 3 chunks (30 rows) failed, left for the next run" in report.message
    assert job.run(settings(engine)).scored == 30


def test_retry_none_leaves_the_failed_chunk_to_the_next_run(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    model = FlakyModel(fails=lambda call: call == 2)

    first = job.run(settings(engine, chunk_size=10, retry="none"), model=model)
    left = unpredicted(engine)
    second = job.run(settings(engine, chunk_size=10, retry="none"))

    assert (first.status, first.attempts, first.scored, first.unscored) == ("failed", 1, 20, 10)
    assert "1 of 3 chunks (10 rows) failed, left for the next run" in first.message
    assert model.calls == 3
    assert left == list(range(11, 21))
    assert (second.status, second.scored) == ("done", 10)
    stored = predictions(engine)
    assert {i for i, row in stored.items() if row["run_id"] == second.run_id} == set(range(11, 21))


def test_retries_stop_after_max_attempts(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 20, bad_every=0))
    model = FlakyModel(fails=lambda call: call >= 2)  # chunk 2 never succeeds

    report = job.run(settings(engine, chunk_size=10, retry="failed", max_attempts=2), model=model)

    assert (report.status, report.attempts, report.scored) == ("failed", 2, 10)
    assert model.calls == 3
    assert unpredicted(engine) == list(range(11, 21))


def test_chunks_not_started_by_the_deadline_are_left_for_the_next_run(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    start = datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    times = iter([start, start])  # the run's start, then the check before the first chunk

    def clock() -> datetime:
        return next(times, start + timedelta(hours=2))  # after that, it is 07:00

    report = job.run(settings(engine, chunk_size=10, finish_by="06:00"), now=clock)

    assert (report.status, report.scored, report.unscored) == ("deadline", 10, 20)
    assert report.message == (
        "10 rows scored, 0 rows failed; 2 of 3 chunks (20 rows) not started by the deadline, "
        "left for the next run"
    )
    assert unpredicted(engine) == list(range(11, 31))
    assert job.run(settings(engine)).scored == 20


def test_a_deadline_already_past_starts_no_chunk(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 10, bad_every=0))

    report = job.run(settings(engine, finish_by=datetime.now(UTC) - timedelta(minutes=1)))

    assert (report.status, report.scored, report.unscored) == ("deadline", 0, 10)
    assert len(unpredicted(engine)) == 10


def test_a_stop_signal_ends_the_run_between_chunks(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 30, bad_every=0))
    stop = threading.Event()

    def signal_then_succeed(call: int) -> bool:  # the signal comes in chunk 1
        stop.set()
        return False

    model = FlakyModel(fails=signal_then_succeed)

    report = job.run(settings(engine, chunk_size=10), model=model, stop=stop)

    assert (report.status, report.scored, report.unscored) == ("stopped", 10, 20)
    assert "not started (stop signal)" in report.message


def test_each_run_is_recorded_with_what_it_did(engine: Engine) -> None:
    storage.add_items(engine, demo_rows(1, 10, bad_every=5))

    report = job.run(settings(engine))

    with engine.connect() as conn:
        row = conn.execute(select(storage.runs)).mappings().one()
    assert row["id"] == report.run_id
    assert (row["status"], row["planned_rows"], row["scored"], row["failed"]) == ("done", 10, 8, 2)
    assert row["model_version"] == "1.0.0"
    assert row["finished_at"] is not None
    assert row["message"] == "8 rows scored, 2 rows failed"
