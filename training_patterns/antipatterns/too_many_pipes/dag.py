"""The pipeline as an explicit DAG: each step declares the steps it depends on and the datasets
it reads and writes; `validate` checks the declaration before anything runs and `run` executes
the steps in topological order, each with a handle on the data-access layer that serves only the
datasets the step declared.

Refused, with a DagError naming the culprits: two steps of one name, a dependency on a step that
does not exist, a cycle, two steps writing one dataset, and a step reading a dataset another step
writes without naming that step in its depends_on (the hidden dependency of tangled scripts).
A dataset no step writes is an input the store already holds (the warehouse's table).
"""

import graphlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from training_patterns.antipatterns.too_many_pipes.data_access import DataAccess, Handle


class DagError(ValueError):
    """The pipeline's declaration is not a valid DAG."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Handle], None]
    depends_on: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


def validate(steps: Iterable[Step]) -> list[str]:
    """The steps' names in an order that runs every step after its dependencies."""
    steps = list(steps)
    duplicated = sorted(name for name, n in Counter(s.name for s in steps).items() if n > 1)
    if duplicated:
        raise DagError(f"steps declared twice: {', '.join(duplicated)}")
    names = {s.name for s in steps}
    unknown = [f"{s.name} -> {d}" for s in steps for d in s.depends_on if d not in names]
    if unknown:
        raise DagError(f"dependencies on unknown steps: {', '.join(unknown)}")
    writers: dict[str, str] = {}
    for step in steps:
        for dataset in step.writes:
            if dataset in writers:
                raise DagError(
                    f"dataset {dataset!r} written by two steps: {writers[dataset]}, {step.name}"
                )
            writers[dataset] = step.name
    undeclared = [
        f"{s.name} reads {d!r} from {writers[d]}"
        for s in steps
        for d in s.reads
        if d in writers and writers[d] != s.name and writers[d] not in s.depends_on
    ]
    if undeclared:
        raise DagError(f"undeclared dependencies: {', '.join(undeclared)}")
    sorter = graphlib.TopologicalSorter({s.name: s.depends_on for s in steps})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise DagError(f"cycle: {' -> '.join(exc.args[1])}") from None


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201


def run(
    steps: Iterable[Step], store: DataAccess, report: Callable[[str], None] = _say
) -> list[str]:
    """Validate, then run each step in topological order through the data-access layer."""
    steps = list(steps)
    order = validate(steps)
    by_name = {s.name: s for s in steps}
    for name in order:
        step = by_name[name]
        step.run(store.handle(name, reads=step.reads, writes=step.writes))
        written = ", ".join(f"{d} ({len(store.read(d).rows)} rows)" for d in step.writes)
        report(f"step {name}: read {', '.join(step.reads) or 'nothing'}; wrote {written}")
    return order
