"""The Open Inference Protocol over gRPC (GRPCInferenceService), beside a model server's HTTP API.

It runs in the same process and event loop as the HTTP API, on its own address
(GRPC_ADDRESS, for example 0.0.0.0:8001), and answers from the same model and the same checks
as the REST routes (shared.open_inference): ServerReady is true exactly when /ready is 200,
ModelInfer takes the same tensors with the same limits. Errors are status codes: a tensor the
model cannot take INVALID_ARGUMENT, an unknown model or version NOT_FOUND, a server not ready
UNAVAILABLE, a message over the body limit RESOURCE_EXHAUSTED (gRPC's own). Outputs go back as
raw_output_contents, what Triton's clients read.
"""

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from fastapi import FastAPI
from prometheus_client import Counter, Histogram

from shared import __version__
from shared.batching import Overloaded
from shared.logs import request_id_var
from shared.open_inference import (
    InferenceError,
    Tensor,
    bad,
    check_model,
    from_bytes,
    from_values,
    infer,
    model_metadata,
    to_bytes,
)
from shared.protocol import open_inference_pb2 as pb
from shared.protocol.open_inference_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from shared.service import LATENCY_BUCKETS, Slot, failing_checks
from shared.settings import ModelServiceSettings

if TYPE_CHECKING:
    from shared.model import Predictor

logger = logging.getLogger(__name__)

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
# Which field of InferTensorContents holds each datatype's values (FP16 and BF16 only raw).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Reply = TypeVar("Reply")

GRPC_REQUESTS = Counter("grpc_requests_total", "gRPC calls answered", ["service", "method", "code"])
GRPC_LATENCY = Histogram(
    "grpc_request_duration_seconds",
    "Time from a gRPC call to its answer",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)


class InferenceService(GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, app: FastAPI, model: "Slot[Predictor]", name: str, max_rows: int) -> None:
        self.app = app
        self.model = model
        self.name = name
        self.max_rows = max_rows

    async def _answer(
        self, context: Any, method: str, reply: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """reply(), or the call aborted with the status code of the error it raised; counted in
        /metrics (grpc_requests_total, grpc_request_duration_seconds) as HTTP requests are."""
        ids = dict(context.invocation_metadata() or ())
        token = request_id_var.set(ids.get("x-request-id") or os.urandom(16).hex())
        started, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            return await reply()
        except InferenceError as exc:
            logger.info("gRPC %s refused: %s", method, exc.message)
            code = STATUS[exc.status]
            await context.abort(code, exc.message)
            raise  # abort raises; this line only tells the type checker
        except Overloaded as exc:  # the micro-batcher's bounds
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc))
            raise
        finally:
            GRPC_REQUESTS.labels(self.name, method, code.name).inc()
            GRPC_LATENCY.labels(self.name, method).observe(time.perf_counter() - started)
            request_id_var.reset(token)

    def _ready_model(self, name: str, version: str) -> "Predictor":
        predictor = self.model.value
        if predictor is None:
            raise InferenceError(503, self.model.not_ready_reason)
        check_model(predictor, name, version)
        return predictor

    async def _not_ready(self) -> str | None:
        reasons = await failing_checks(self.app.state.readiness)
        return "; ".join(f"{k}: {v}" for k, v in reasons.items()) or None

    async def ServerLive(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            return pb.ServerLiveResponse(live=not await failing_checks(self.app.state.liveness))

        return await self._answer(context, "ServerLive", reply)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            return pb.ServerReadyResponse(ready=await self._not_ready() is None)

        return await self._answer(context, "ServerReady", reply)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            if self.model.value is None:
                return pb.ModelReadyResponse(ready=False)
            self._ready_model(request.name, request.version)
            return pb.ModelReadyResponse(ready=await self._not_ready() is None)

        return await self._answer(context, "ModelReady", reply)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            return pb.ServerMetadataResponse(name=self.name, version=__version__)

        return await self._answer(context, "ServerMetadata", reply)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            # The REST answer's fields are the message's: one description of the model.
            predictor = self._ready_model(request.name, request.version)
            return pb.ModelMetadataResponse(**model_metadata(predictor))

        return await self._answer(context, "ModelMetadata", reply)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        async def reply() -> Any:
            predictor = self._ready_model(request.model_name, request.model_version)
            requested = [output.name for output in request.outputs] or None
            outputs = await infer(predictor, _inputs(request), requested, self.max_rows)
            return pb.ModelInferResponse(
                model_name=predictor.card.name,
                model_version=predictor.card.version,
                id=request.id or request_id_var.get(),
                outputs=[
                    pb.ModelInferResponse.InferOutputTensor(
                        name=t.name, datatype=t.datatype, shape=t.shape
                    )
                    for t in outputs
                ],
                raw_output_contents=[to_bytes(t) for t in outputs],
            )

        return await self._answer(context, "ModelInfer", reply)


def _inputs(request: Any) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensors = []
    for i, given in enumerate(request.inputs):
        shape = list(given.shape)
        if raw:
            if given.HasField("contents"):
                raise bad(f"input {given.name!r}: contents and raw_input_contents both given")
            tensors.append(from_bytes(given.name, given.datatype, shape, raw[i]))
            continue
        field = CONTENTS.get(given.datatype)
        if field is None:
            raise bad(f"input {given.name!r}: {given.datatype} goes in raw_input_contents only")
        values = list(getattr(given.contents, field))
        if given.datatype == "BYTES":
            values = [v.decode("utf-8", "replace") for v in values]
        tensors.append(from_values(given.name, given.datatype, shape, values))
    return tensors


@asynccontextmanager
async def serving_grpc(
    app: FastAPI, model: "Slot[Predictor]", name: str, settings: ModelServiceSettings
) -> AsyncIterator[None]:
    """Serve GRPCInferenceService on settings.grpc_address while the context is open."""
    assert settings.grpc_address is not None
    limit = settings.max_body_bytes  # the same bound as an HTTP body
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ]
    )
    add_GRPCInferenceServiceServicer_to_server(
        InferenceService(app, model, name, settings.max_rows), server
    )
    if not server.add_insecure_port(settings.grpc_address):
        raise RuntimeError(f"cannot listen for gRPC on {settings.grpc_address}")
    await server.start()
    logger.info("gRPC (Open Inference Protocol) on %s", settings.grpc_address)
    try:
        yield
    finally:
        await server.stop(grace=5)
