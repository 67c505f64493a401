"""The fixed pipeline: valid, run in topological order, the same result on every back end, and
its steps touch data only through the access layer: with open() and sqlite3 forbidden it still
runs on the memory back end, where the tangled scripts fail at once."""

import builtins
import io
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.training import iris_dataset
from training_patterns.antipatterns.too_many_pipes import dag, pipeline, tangled
from training_patterns.antipatterns.too_many_pipes.data_access import (
    AccessError,
    Handle,
    MemoryAccess,
    Table,
)
from training_patterns.antipatterns.too_many_pipes.settings import PipelineSettings

ORDER = ["gather", "validate", "preprocess", "train", "evaluate"]


class RawAccess(AssertionError):
    """A step reached a store without the access layer."""


# The libraries' own files (scikit-learn's bundled iris, package metadata read by plugins)
# are not the pipeline's data: reading those stays allowed.
LIBRARIES = (sys.prefix, sys.base_prefix)


def forbid_raw_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, open() of anything but a library's file, and sqlite3.connect, raise."""
    real_open = io.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        path = os.path.realpath(file) if isinstance(file, str | os.PathLike) else ""
        library = path.startswith(LIBRARIES) or ".egg-info" in path or ".dist-info" in path
        if library and set(mode) <= {"r", "b", "t"}:
            return real_open(file, mode, *args, **kwargs)
        raise RawAccess(f"raw data access: open({file!r}, {mode!r})")

    def forbidden_connect(*args: Any, **kwargs: Any) -> Any:
        raise RawAccess(f"raw data access: sqlite3.connect{args}")

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(sqlite3, "connect", forbidden_connect)


@pytest.mark.parametrize("backend", ["memory", "csv", "sqlite"])
def test_the_pipeline_runs_in_topological_order_on_every_back_end(
    backend: str, tmp_path: Path
) -> None:
    settings = PipelineSettings(backend=backend, store_dir=str(tmp_path))
    result = pipeline.run(settings)
    assert result == {"backend": backend, "order": ORDER, "test_rows": 30, "accuracy": 0.9667}


def test_the_declaration_is_a_valid_dag() -> None:
    assert dag.validate(pipeline.steps(PipelineSettings())) == ORDER


def test_steps_read_data_only_through_the_access_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryAccess()
    pipeline.publish_source(store)  # the warehouse's side: it reads sklearn's file
    forbid_raw_access(monkeypatch)
    order = dag.run(pipeline.steps(PipelineSettings()), store, report=lambda line: None)
    assert order == ORDER
    assert store.read("metrics").column("accuracy") == [pytest.approx(0.9667, abs=1e-4)]


def test_the_tangled_scripts_reach_stores_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = iris_dataset()
    monkeypatch.setattr(tangled, "iris_dataset", lambda: data)  # the same source, loaded before
    monkeypatch.setattr(tangled, "WORK", str(tmp_path))
    monkeypatch.setattr(tangled, "CALLS", [])
    forbid_raw_access(monkeypatch)
    with pytest.raises(RawAccess, match="iris_export.csv"):
        tangled.evaluate()


def test_the_tangled_scripts_run_hidden_steps_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tangled, "WORK", str(tmp_path))
    monkeypatch.setattr(tangled, "CALLS", [])
    result = tangled.evaluate()
    assert result["calls"] == ["evaluate", "train", "preprocess", "gather", "preprocess", "gather"]
    assert result["accuracy"] == 0.9667


class Recording(MemoryAccess):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def _read(self, name: str) -> Table | None:
        self.reads.append(name)
        return super()._read(name)


def test_each_step_reads_exactly_what_it_declares() -> None:
    store = Recording()
    pipeline.publish_source(store)
    for step in pipeline.steps(PipelineSettings()):
        store.reads.clear()
        step.run(store.handle(step.name, reads=step.reads, writes=step.writes))
        assert sorted(store.reads) == sorted(step.reads), step.name
        assert set(step.writes) <= set(store.tables), step.name


def test_a_step_that_reads_past_its_declaration_is_stopped() -> None:
    def sneaky(io: Handle) -> None:
        io.read(pipeline.SOURCE)  # declared: clean only

    steps = pipeline.steps(PipelineSettings())
    steps[3] = dag.Step("train", sneaky, depends_on=("preprocess",), reads=("train_set",))
    steps.pop()  # evaluate reads the model train no longer writes
    store = MemoryAccess()
    pipeline.publish_source(store)
    with pytest.raises(AccessError, match="step 'train' reads 'iris'"):
        dag.run(steps, store, report=lambda line: None)


def test_validate_drops_bad_rows_and_refuses_none_left() -> None:
    store = MemoryAccess()
    columns = ("row_id", *pipeline.FEATURES, pipeline.LABEL)
    good: tuple[float, ...] = (0.0, 5.1, 3.5, 1.4, 0.2, 0.0)
    bad: list[tuple[float, ...]] = [
        (1.0, float("nan"), 3.5, 1.4, 0.2, 0.0),
        (2.0, -1.0, 3.5, 1.4, 0.2, 0.0),
        (3.0, 5.1, 3.5, 1.4, 0.2, 7.0),
    ]
    store.write("raw", Table(columns, [good, *bad]))
    pipeline.validate(store.handle("validate", reads=("raw",), writes=("clean",)))
    assert store.read("clean").rows == [good]
    store.write("raw", Table(columns, bad))
    with pytest.raises(ValueError, match="no valid row"):
        pipeline.validate(store.handle("validate", reads=("raw",), writes=("clean",)))
