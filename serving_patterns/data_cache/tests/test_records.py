"""The records table on its own, on SQLite and PostgreSQL: revisions, reads by revision, and the
preprocessing of a record."""

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from serving_patterns.data_cache import records
from serving_patterns.data_cache.preprocessing import preprocess
from serving_patterns.data_cache.records import RecordFields
from serving_patterns.data_cache.seed import demo_records

SETOSA = RecordFields(sepal_length_mm=51, sepal_width_mm=35, petal_length_mm=14, petal_width_mm=2)
VIRGINICA = RecordFields(
    sepal_length_mm=67, sepal_width_mm=30, petal_length_mm=52, petal_width_mm=23
)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = records.connect(database_url, timeout_seconds=5)
    records.create_tables(engine)
    yield engine
    engine.dispose()


def test_every_write_gets_a_newer_revision_and_the_warmer_reads_them_in_order(
    engine: Engine,
) -> None:
    first, second = records.add(engine, [SETOSA, SETOSA])
    changed = records.change(engine, first.id, VIRGINICA)

    assert (first.revision, second.revision) == (1, 2)
    assert changed is not None and changed.revision == 3
    assert records.read(engine, first.id) == changed
    assert [(r.id, r.revision) for r in records.changed_since(engine, 0, 10)] == [
        (second.id, 2),
        (first.id, 3),
    ]
    assert records.changed_since(engine, 3, 10) == []
    assert [r.revision for r in records.changed_since(engine, 0, 1)] == [2]


def test_changing_an_unknown_record_is_none_and_uses_no_revision(engine: Engine) -> None:
    assert records.change(engine, 42, SETOSA) is None
    assert records.read(engine, 42) is None
    assert records.add(engine, [SETOSA])[0].revision == 1


def test_concurrent_writers_take_distinct_revisions_in_commit_order(engine: Engine) -> None:
    # The counter row serialises the writers: whatever the interleaving, no two writes share a
    # revision and none is skipped.
    def write() -> None:
        for _ in range(10):
            records.add(engine, [SETOSA])

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert [r.revision for r in records.changed_since(engine, 0, 100)] == list(range(1, 41))


def test_preprocessing_gives_the_model_centimetres_in_its_feature_order(engine: Engine) -> None:
    (record,) = records.add(engine, [VIRGINICA])

    assert preprocess(record) == [6.7, 3.0, 5.2, 2.3]


def test_demo_records_are_the_same_for_the_same_ids() -> None:
    assert demo_records(1, 20) == demo_records(1, 20)
    assert demo_records(1, 20) != demo_records(21, 20)
