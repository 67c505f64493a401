"""Serve an exported model: its card (model.json), an onnxruntime session loaded off the event
loop, and the service skeleton every model server shares (create_model_service)."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from shared.schemas import Metadata, PredictRequest, UnscorableRows
from shared.service import create_service, not_ready
from shared.settings import ModelServiceSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    """What model.json says about the model: the API contract's /metadata comes from here."""

    name: str
    version: str
    labels: list[str]
    feature_names: list[str]
    sample_input: list[list[float]]
    extra: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> "ModelCard":
        raw = json.loads(path.read_text())
        fields = {k: raw.pop(k) for k in ("name", "version", "labels", "feature_names")}
        return cls(**fields, sample_input=raw.pop("sample_input"), extra=raw)


class Predictor:
    """An onnxruntime session over a classifier exported with zipmap off (label, probabilities)."""

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        self.card = ModelCard.read(model_dir / "model.json")
        options = ort.SessionOptions()
        # Small models answer in microseconds; thread pools would only add hand-off latency and
        # fight the web server for the machine's cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        self._probabilities = self.session.get_outputs()[1].name

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per input row, columns in card.labels order."""
        out: np.ndarray = self.session.run([self._probabilities], {self._input: rows})[0]
        return out

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """Per row, the label and the probability of every class (the API contract's shape)."""
        proba = self.predict_proba(np.asarray(rows, dtype=np.float32))
        if not np.isfinite(proba).all():
            raise UnscorableRows(np.flatnonzero(~np.isfinite(proba).all(axis=1)).tolist())
        labels = self.card.labels
        # Whole-array calls, then plain Python: per-row numpy calls cost more than the model.
        return [
            {"label": labels[best], "probabilities": dict(zip(labels, row, strict=True))}
            for best, row in zip(proba.argmax(axis=1).tolist(), proba.tolist(), strict=True)
        ]


class ModelSlot:
    """The model a service is serving, or why it has none yet (readiness reads this).

    Loading runs in a thread and retries until the files are there, so the service answers
    /health at once, is not ready while it loads, and recovers by itself once the model appears.
    """

    def __init__(self, model_dir: str | Path, retry_seconds: float = 1.0) -> None:
        self.model_dir = Path(model_dir)
        self.retry_seconds = retry_seconds
        self.predictor: Predictor | None = None
        self.not_ready_reason = f"model loading from {self.model_dir}"

    async def load(self) -> None:
        while self.predictor is None:
            try:
                self.predictor = await asyncio.to_thread(Predictor, self.model_dir)
            # Whatever stops the load (missing file, bad bytes) leaves the service not ready, with
            # the reason in /ready, and is tried again: the file may still be on its way.
            except Exception as exc:
                self.not_ready_reason = f"model not loadable from {self.model_dir}: {exc}"
                logger.warning(self.not_ready_reason)
                await asyncio.sleep(self.retry_seconds)
        card = self.predictor.card
        logger.info("model %s %s loaded from %s", card.name, card.version, self.model_dir)

    def readiness(self) -> str | None:
        return None if self.predictor else self.not_ready_reason

    def require(self) -> Predictor:
        """The predictor, or the 503 (with Retry-After) a request gets while there is none."""
        if self.predictor is None:
            raise not_ready(self.not_ready_reason)
        return self.predictor


def create_model_service(
    name: str,
    settings: ModelServiceSettings,
    description: str = "",
    input_schema: type[BaseModel] = PredictRequest,
    sample_input: Callable[[ModelCard], dict[str, Any]] | None = None,
) -> tuple[FastAPI, ModelSlot]:
    """A service (shared.service.create_service) that serves the model in settings.model_dir.

    The model loads in the background: /ready is 503 until it is in memory. GET /metadata
    describes it: name, version, features, labels, the request body's schema and a sample
    request (by default {"data": <the card's sample rows>}). The pattern adds /predict.
    """
    model = ModelSlot(settings.model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(model.load())
        yield
        loading.cancel()

    app = create_service(name, settings, lifespan, description=description)
    app.state.readiness["model"] = model.readiness

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        card = model.require().card
        return Metadata(
            model_name=card.name,
            model_version=card.version,
            feature_names=card.feature_names,
            labels=card.labels,
            input_schema=input_schema.model_json_schema(),
            sample_input=sample_input(card) if sample_input else {"data": card.sample_input},
            extra=card.extra,
        )

    return app, model
