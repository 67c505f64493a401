"""Fetch: the one-shot that puts the serving alias's model where the predictor loads it.

    python -m training_patterns.batch_training.fetch     # iris@champion into .local/.../champion

It reads MLflow's REST API with the standard library (the serving image carries no MLflow):
the version the alias names, then its files (model.onnx, model.json) through the server's
artefact proxy. The files land in a scratch directory and replace the old ones by rename, so
a predictor never loads half a model. No champion yet (every version rejected by the gate) is
an error that names it.
"""

import json
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from shared.logs import configure_logging
from training_patterns.batch_training.settings import FetchSettings

logger = logging.getLogger(__name__)

FILES = ["model.onnx", "model.json"]
PROXIED = "mlflow-artifacts:/"  # a source the server serves under /api/2.0/mlflow-artifacts/


class NoModel(RuntimeError):
    """The registry names no version for the alias, or cannot be read."""


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


def aliased_version(settings: FetchSettings) -> dict[str, Any]:
    """The model version the alias points at, as MLflow's REST API describes it."""
    query = urllib.parse.urlencode({"name": settings.model_name, "alias": settings.alias})
    url = f"{settings.tracking_uri}/api/2.0/mlflow/registered-models/alias?{query}"
    try:
        version: dict[str, Any] = json.loads(_get(url, settings.timeout))["model_version"]
    except urllib.error.HTTPError as exc:
        # MLflow: 404 for a model it does not know, 400 for an alias the model does not have.
        if exc.code in (400, 404):
            raise NoModel(f"{settings.model_name} has no version aliased {settings.alias}") from exc
        raise
    return version


def fetch(settings: FetchSettings) -> str:
    """Download the aliased version's files into settings.out_dir; its version number."""
    version = aliased_version(settings)
    source = str(version["source"])
    if not source.startswith(PROXIED):
        raise NoModel(f"version {version['version']}'s files are at {source}, not on the server")
    base = f"{settings.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{source[len(PROXIED) :]}"
    out = Path(settings.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name in FILES:
            (scratch / name).write_bytes(_get(f"{base.rstrip('/')}/{name}", settings.timeout))
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        if out.exists():
            out.rename(old)
        scratch.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info(
        "%s version %s (%s) in %s",
        settings.model_name, version["version"], settings.alias, out,
    )  # fmt: skip
    return str(version["version"])


def main() -> int:
    settings = FetchSettings()
    configure_logging("batch-training-fetch", settings.log_level)
    try:
        fetch(settings)
    except (NoModel, OSError) as exc:
        logger.error("no model to serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
