"""Re-run a registered model version from what the registry holds, and check the result.

    .venv/bin/python -m training_patterns.antipatterns.only_me.reproduce   # the latest version
    .venv/bin/python -m training_patterns.antipatterns.only_me.reproduce \
        --card .local/only_me/notebook/model.json      # what the notebook left: its model card

It reads the version's run (parameters, metric, tags), names what is missing from RECORD,
compares the environment and the code with the recorded ones (a difference explains a
mismatch before any training), checks the data version of the rows it gathers, fits again with
the recorded seed and hyperparameters, and compares the metric and the model's hash. One JSON
line on stdout; exit 0 when reproduced, 1 otherwise.
"""

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from shared import tracking
from shared.logs import configure_logging
from training_patterns.antipatterns.only_me.recorded import (
    RECORD,
    code_sha256,
    file_sha256,
    fit,
    libraries,
    rows,
)
from training_patterns.antipatterns.only_me.settings import ReproducerSettings

logger = logging.getLogger(__name__)


@dataclass
class Reproduction:
    missing: list[str]
    differences: dict[str, dict[str, str]] = field(default_factory=dict)  # recorded vs now
    run_id: str | None = None

    @property
    def reproduced(self) -> bool:
        return not self.missing and not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "reproduced": self.reproduced,
            "missing": self.missing,
            "differences": self.differences,
        }


def record_of(
    client: MlflowClient, model_name: str, version: str = ""
) -> tuple[str, dict[str, str]]:
    """(run id, its parameters, metrics and tags in one mapping) of the version, or the latest."""
    if not version:
        versions = client.search_model_versions(f"name = '{model_name}'")
        if not versions:
            raise LookupError(f"no version of {model_name} in the registry")
        version = str(max(int(v.version) for v in versions))
    run = client.get_run(str(client.get_model_version(model_name, version).run_id))
    data = run.data
    record = {**data.tags, **data.params, **{k: repr(v) for k, v in data.metrics.items()}}
    return run.info.run_id, record


def record_of_card(path: Path) -> dict[str, str]:
    """What a model handed over without a run tells a re-run: its card's metric and hash."""
    card = json.loads(path.read_text())
    return {
        "test_accuracy": repr(float(card["metrics"]["test_accuracy"])),
        "model_sha256": str(card["onnx_sha256"]),
    }


def check(record: Mapping[str, str], requirements: Path, work_dir: Path) -> Reproduction:
    """Re-run what `record` describes, here, and say what is missing or differs."""
    missing = [name for name in RECORD if name not in record]
    if missing:
        return Reproduction(missing)
    differences: dict[str, dict[str, str]] = {}

    def compare(name: str, now: str) -> None:
        if record[name] != now:
            differences[name] = {"recorded": record[name], "now": now}

    compare("requirements_sha256", file_sha256(requirements))
    compare("libraries", libraries())
    compare("code_sha256", code_sha256())
    seed = int(record["seed"])
    data = rows(seed)
    compare("data_version", tracking.data_version(data.x, data.y))
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        fitted = fit(data, float(record["regularization"]), seed, Path(scratch))
    compare("model_sha256", fitted.model_sha256)
    compare("test_accuracy", repr(fitted.test_accuracy))
    return Reproduction([], differences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--card", type=Path, help="check a model card, not a registered version")
    args = parser.parse_args()
    settings = ReproducerSettings()
    configure_logging("only-me-reproducer", settings.log_level)
    run_id = None
    if args.card is not None:
        record = record_of_card(args.card)
    else:
        client = tracking.connect(settings.tracking_uri)
        run_id, record = record_of(client, settings.model_name, settings.version)
    result = check(record, Path(settings.requirements), Path(settings.work_dir))
    result.run_id = run_id
    logger.info("run %s reproduced: %s", run_id, result.reproduced)
    sys.stdout.write(json.dumps(result.as_json()) + "\n")
    sys.exit(0 if result.reproduced else 1)


if __name__ == "__main__":
    main()
