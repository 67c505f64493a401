"""The data-access layer: one interface, three back ends that give back what was written, and
a step's handle that refuses datasets the step did not declare."""

from pathlib import Path

import pytest

from training_patterns.antipatterns.too_many_pipes.data_access import (
    AccessError,
    CsvAccess,
    DataAccess,
    MemoryAccess,
    SqliteAccess,
    Table,
    open_store,
)

TABLE = Table(("a", "b"), [(1.0, 0.1), (2.5, 1e-9), (-3.0, 1 / 3)])


@pytest.fixture(params=["memory", "csv", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DataAccess:
    return open_store(request.param, tmp_path)


def test_every_back_end_returns_what_was_written_exactly(store: DataAccess) -> None:
    store.write("numbers", TABLE)
    assert store.read("numbers") == TABLE
    store.write("numbers", Table(("c",), [(7.0,)]))  # replaced whole
    assert store.read("numbers") == Table(("c",), [(7.0,)])


def test_a_missing_dataset_and_a_bad_name_are_refused(store: DataAccess) -> None:
    with pytest.raises(AccessError, match="no dataset 'absent'"):
        store.read("absent")
    for name in ("../etc/passwd", 'x"; DROP TABLE y; --', "Upper", ""):
        with pytest.raises(AccessError, match="is not"):
            store.write(name, TABLE)


def test_tables_are_checked() -> None:
    with pytest.raises(AccessError, match="row 1 has 1 values for 2 columns"):
        Table(("a", "b"), [(1.0, 2.0), (3.0,)])
    with pytest.raises(AccessError, match="column name"):
        Table(("a b",), [])
    with pytest.raises(AccessError, match="duplicate column"):
        Table(("a", "a"), [])


def test_the_back_end_is_a_setting() -> None:
    assert isinstance(open_store("memory", "x"), MemoryAccess)
    assert isinstance(open_store("csv", "x"), CsvAccess)
    assert isinstance(open_store("sqlite", "x"), SqliteAccess)
    with pytest.raises(AccessError, match="unknown back end 'nosql'"):
        open_store("nosql", "x")


def test_a_handle_serves_only_the_declared_datasets() -> None:
    store = MemoryAccess()
    store.write("raw", TABLE)
    store.write("secret", TABLE)
    io = store.handle("train", reads=("raw",), writes=("model",))
    assert io.read("raw") == TABLE
    io.write("model", TABLE)
    with pytest.raises(AccessError, match="step 'train' reads 'secret', which it does not declare"):
        io.read("secret")
    with pytest.raises(AccessError, match="step 'train' writes 'raw', which it does not declare"):
        io.write("raw", TABLE)
