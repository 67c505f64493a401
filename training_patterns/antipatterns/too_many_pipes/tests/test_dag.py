"""The DAG validator: a declaration with a cycle, an unknown step, a duplicate or an undeclared
dependency is refused before any step runs, with an error naming the culprits."""

import pytest

from training_patterns.antipatterns.too_many_pipes import dag
from training_patterns.antipatterns.too_many_pipes.data_access import Handle, MemoryAccess, Table


def noop(io: Handle) -> None:
    for name in io.writes:
        io.write(name, Table(("x",), [(1.0,)]))


def step(
    name: str, *deps: str, reads: tuple[str, ...] = (), writes: tuple[str, ...] = ()
) -> dag.Step:
    return dag.Step(name, noop, depends_on=deps, reads=reads, writes=writes)


def test_order_is_topological_whatever_the_declaration_order() -> None:
    steps = [step("c", "a", "b"), step("b", "a"), step("a"), step("d", "c")]
    order = dag.validate(steps)
    assert sorted(order) == ["a", "b", "c", "d"]
    for s in steps:
        assert all(order.index(d) < order.index(s.name) for d in s.depends_on)


def test_a_cycle_is_rejected_and_named() -> None:
    with pytest.raises(
        dag.DagError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    ):
        dag.validate([step("a", "c"), step("b", "a"), step("c", "b"), step("d")])


def test_a_step_depending_on_itself_is_a_cycle() -> None:
    with pytest.raises(dag.DagError, match="cycle: a -> a"):
        dag.validate([step("a", "a")])


def test_a_dependency_on_an_unknown_step_is_rejected() -> None:
    with pytest.raises(dag.DagError, match="unknown steps: train -> preprocesss"):
        dag.validate([step("preprocess"), step("train", "preprocesss")])


def test_reading_a_dataset_from_a_step_not_declared_as_a_dependency_is_rejected() -> None:
    # train reads what preprocess writes but does not say it depends on preprocess: the
    # topological order could run it first.
    steps = [
        step("preprocess", writes=("features",)),
        step("train", reads=("features",), writes=("model",)),
    ]
    with pytest.raises(
        dag.DagError, match="undeclared dependencies: train reads 'features' from preprocess"
    ):
        dag.validate(steps)


def test_a_transitive_writer_must_still_be_declared() -> None:
    steps = [
        step("gather", writes=("raw",)),
        step("preprocess", "gather", reads=("raw",), writes=("features",)),
        step("train", "preprocess", reads=("features", "raw")),
    ]
    with pytest.raises(dag.DagError, match="train reads 'raw' from gather"):
        dag.validate(steps)


def test_duplicate_steps_and_two_writers_of_one_dataset_are_rejected() -> None:
    with pytest.raises(dag.DagError, match="steps declared twice: a"):
        dag.validate([step("a"), step("a")])
    with pytest.raises(dag.DagError, match="'model' written by two steps: a, b"):
        dag.validate([step("a", writes=("model",)), step("b", writes=("model",))])


def test_an_invalid_dag_runs_no_step() -> None:
    ran: list[str] = []
    steps = [
        dag.Step("a", lambda io: ran.append("a"), depends_on=("b",)),
        dag.Step("b", lambda io: ran.append("b"), depends_on=("a",)),
    ]
    with pytest.raises(dag.DagError):
        dag.run(steps, MemoryAccess(), report=ran.append)
    with pytest.raises(dag.DagError, match="declared twice"):
        dag.run([*steps[:1], steps[0]], MemoryAccess(), report=ran.append)
    assert ran == []
