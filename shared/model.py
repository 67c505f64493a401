"""Serve an exported model: its card (model.json), an onnxruntime session, and the service
skeleton every model server shares (create_model_service)."""

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

from shared import __version__
from shared.batching import MicroBatcher, Overloaded
from shared.open_inference import TensorSpec, add_open_inference_routes
from shared.schemas import Metadata, PredictRequest, UnscorableRows
from shared.service import Slot, create_service, error_key
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
        # The graph's tensors, as the Open Inference Protocol describes them.
        self.inputs = [TensorSpec.of(node) for node in self.session.get_inputs()]
        self.outputs = [TensorSpec.of(node) for node in self.session.get_outputs()]
        self._input = self.inputs[0].name
        self._probabilities = self.outputs[1].name
        # Set by create_model_service when MAX_BATCH_SIZE > 1: apredict and arun go through it.
        self.batcher: MicroBatcher | None = None

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """The named outputs for the given inputs: the graph as it stands (the protocol's infer)."""
        results: list[np.ndarray] = self.session.run(outputs, feeds)
        return results

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for the given inputs, by name (what the micro-batcher runs)."""
        names = [spec.name for spec in self.outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))

    async def arun(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """run(), in a batch with other callers' rows when micro-batching is on."""
        if self.batcher is None:
            return self.run(feeds, outputs)
        found = await self.batcher(feeds)
        return [found[name] for name in outputs]

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities, one row per input row, columns in card.labels order."""
        out: np.ndarray = self.session.run([self._probabilities], {self._input: rows})[0]
        return out

    def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """Per row, the label and the probability of every class (the API contract's shape)."""
        return self._predictions(self.predict_proba(np.asarray(rows, dtype=np.float32)))

    async def apredict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """predict(), in a batch with other callers' rows when micro-batching is on (what the
        model servers' /predict routes call)."""
        if self.batcher is None:
            return self.predict(rows)
        feeds = {self._input: np.asarray(rows, dtype=np.float32)}
        return self._predictions((await self.arun(feeds, [self._probabilities]))[0])

    def _predictions(self, proba: np.ndarray) -> list[dict[str, Any]]:
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
    request (by default {"data": <the card's sample rows>}). The Open Inference Protocol's REST
    routes (/v2/..., shared.open_inference) serve the same model. The pattern adds /predict.
    """
    batching = settings.max_batch_size > 1

    def load() -> Predictor:
        predictor = Predictor(settings.model_dir)
        if batching:
            predictor.batcher = MicroBatcher(
                predictor.run_all,
                max_batch_size=settings.max_batch_size,
                max_wait_seconds=settings.max_batch_wait_ms / 1000,
                max_queue=settings.max_batch_queue,
                service=name,
            )
        return predictor

    model = Slot("model", settings.model_dir, load)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(model.loading())
            stack.push_async_callback(_close_batcher, model)
            if settings.grpc_address is not None:
                # Imported here: grpcio is in the model servers' image, not in every image that
                # imports this module for Predictor (the queue worker, the batch job).
                from shared.open_inference_grpc import serving_grpc

                await stack.enter_async_context(serving_grpc(app, model, name, settings))
            yield

    app = create_service(
        name,
        settings,
        lifespan,
        description=description,
        readiness={"model": model.readiness},
    )
    app.add_exception_handler(Overloaded, _overloaded)

    add_open_inference_routes(app, model, name, __version__, settings.max_rows)

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Metadata:
        card = model.require().card
        return card.metadata(input_schema, sample_input(card) if sample_input else None)

    return app, model


async def _close_batcher(model: Slot[Predictor]) -> None:
    if model.value is not None and model.value.batcher is not None:
        await model.value.batcher.close()


async def _overloaded(request: Request, exc: Exception) -> Response:
    """503 with Retry-After: the micro-batcher's queue is full or too slow for this request."""
    return JSONResponse(
        {error_key(request.url.path): str(exc)}, status_code=503, headers={"Retry-After": "1"}
    )
