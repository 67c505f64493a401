"""What the pipeline's runs did: each step's status, from Metaflow's records, then the model
repository's runs and versions, from MLflow.

    python -m training_patterns.pipeline_training.runs                 # both
    python -m training_patterns.pipeline_training.runs --steps         # Metaflow's side only

A step is `ran` (finished in this run), `cloned` (a resume reused a finished step's output
instead of running it again), `failed`, or `-` (not reached). The last runs of each flow, oldest
first, numbered from 1 among those shown (Metaflow's run ids are in its records and UI).
"""

import argparse
import logging

from training_patterns.pipeline_training.settings import PipelineSettings, metaflow_environment

FLOWS = {
    "DataRefreshFlow": ["start", "gather", "validate", "preprocess", "end"],
    "TrainingFlow": ["start", "train", "evaluate", "register", "end"],
}


def step_table(last: int = 5, datastore: str | None = None) -> list[str]:
    """Each flow's last runs, step by step (datastore: the folder METAFLOW_DATASTORE_SYSROOT_LOCAL
    names, if not that of the environment)."""
    metaflow_environment()
    from metaflow.client.core import Flow, Run, metadata, namespace
    from metaflow.exception import MetaflowNotFound

    if datastore:
        metadata(f"local@{datastore}")
    namespace(None)
    lines = []
    for name, steps in FLOWS.items():
        runs: list[Run] = []
        try:
            runs = list(Flow(name).runs())[::-1]  # type: ignore[no-untyped-call]
        except MetaflowNotFound:
            pass
        row = "{:<18}{:<10}" + "{:<12}" * len(steps)
        lines.append(row.format(name, "status", *steps).rstrip())
        shown = runs[-last:]
        for number, run in enumerate(shown, 1):
            found = {s.id: s.task for s in run.steps()}
            cells = [_state(found.get(step)) for step in steps]
            status = "finished" if run.successful else "failed" if "failed" in cells else "running"
            lines.append(row.format(f"  run {number}", status, *cells).rstrip())
    return lines


def _state(task: object) -> str:
    if task is None:
        return "-"
    if not getattr(task, "successful", False):
        return "failed"
    return "cloned" if "origin-task-id" in task.metadata_dict else "ran"  # type: ignore[attr-defined]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    defaults = PipelineSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", action="store_true", help="Metaflow's per-step status only")
    parser.add_argument("--last", type=int, default=5, help="runs shown per flow")
    parser.add_argument("--tracking-uri", default=defaults.tracking_uri)
    args = parser.parse_args()
    lines = step_table(args.last)
    if not args.steps:
        from shared import tracking
        from training_patterns.batch_training.runs import table

        client = tracking.connect(args.tracking_uri)
        lines += [
            "",
            *table(client, defaults.experiment, defaults.model_name, defaults.serving_alias),
        ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
