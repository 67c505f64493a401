"""Serve an exported model: its card (model.json), an onnxruntime session, and the service
skeleton every model server shares (create_model_service)."""

import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from shared.schemas import Metadata, PredictRequest, UnscorableRows
from shared.service import Slot, create_service
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

    def metadata(
        self, input_schema: type[BaseModel], sample_input: dict[str, Any] | None = None
    ) -> Metadata:
        """GET /metadata's answer: by default the sample request is {"data": sample rows}."""
        return Metadata(
            model_name=self.name,
            model_version=self.version,
            feature_names=self.feature_names,
            labels=self.labels,
            input_schema=input_schema.model_json_schema(),
            sample_input=sample_input or {"data": self.sample_input},
            extra=self.extra,
        )


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


def create_model_service(
    name: str,
    settings: ModelServiceSettings,
    description: str = "",
    input_schema: type[BaseModel] = PredictRequest,
    sample_input: Callable[[ModelCard], dict[str, Any]] | None = None,
) -> tuple[FastAPI, Slot[Predictor]]:
    """A service (shared.service.create_service) that serves the model in settings.model_dir.

    The model loads in the background: /ready is 503 until it is in memory. GET /metadata
    describes it: name, version, features, labels, the request body's schema and a sample
    request (by default {"data": <the card's sample rows>}). The pattern adds /predict.
    """
    model = Slot("model", settings.model_dir, lambda: Predictor(settings.model_dir))

    def lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
        return model.loading()

    app = create_service(
        name, settings, lifespan, description=description, readiness={"model": model.readiness}
    )

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        card = model.require().card
        return card.metadata(input_schema, sample_input(card) if sample_input else None)

    return app, model
