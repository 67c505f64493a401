"""What the model repository holds for this pattern, read from the MLflow server: the runs
(oldest first) with their status, failed step, row counts, accuracy, data version, model version
and gate, then where the serving alias points.

    python -m training_patterns.batch_training.runs --tracking-uri http://localhost:5000

The MLflow UI (the same server, in a browser) shows the same and more.
"""

import argparse
import logging

from mlflow import MlflowClient

from shared import tracking
from shared.tracking import GATE_TAG
from training_patterns.batch_training.job import FAILED_STEP_TAG
from training_patterns.batch_training.settings import TrainerSettings

COLUMNS = "{:<32}  {:<8}  {:<10}  {:>7}  {:>8}  {:<12}  {:>7}  {}"


def table(client: MlflowClient, experiment: str, model: str, alias: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    runs = (
        client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
        if found
        else []
    )
    versions = {v.run_id: str(v.version) for v in client.search_model_versions(f"name = '{model}'")}
    lines = [
        COLUMNS.format("run", "status", "failed at", "valid", "invalid", "data", "version", "gate")
    ]
    for run in runs:
        metrics, tags = run.data.metrics, run.data.tags
        lines.append(
            COLUMNS.format(
                run.info.run_id,
                run.info.status,
                tags.get(FAILED_STEP_TAG, "-"),
                _count(metrics.get("rows_valid")),
                _count(metrics.get("rows_invalid")),
                tags.get(tracking.DATA_VERSION_TAG, "-")[:12],
                versions.get(run.info.run_id, "-"),
                tags.get(GATE_TAG, "-"),
            ).rstrip()
        )
    champion = tracking.alias_version(client, model, alias)
    lines.append(f"{alias}: " + (f"{model} version {champion.version}" if champion else "none"))
    return lines


def _count(value: float | None) -> str:
    return "-" if value is None else str(int(value))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    defaults = TrainerSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=defaults.tracking_uri)
    parser.add_argument("--experiment", default=defaults.experiment)
    parser.add_argument("--model", default=defaults.model_name)
    parser.add_argument("--alias", default=defaults.serving_alias)
    args = parser.parse_args()
    client = tracking.connect(args.tracking_uri)
    print("\n".join(table(client, args.experiment, args.model, args.alias)))  # noqa: T201


if __name__ == "__main__":
    main()
