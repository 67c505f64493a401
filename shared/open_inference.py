"""The Open Inference Protocol (KServe's v2, what Triton, KServe and MLServer speak), for every
model server built on shared.model.create_model_service.

The tensors and their checks are here once, for both forms of the protocol: the REST routes
below and the gRPC service of shared/open_inference_grpc.py. What a model takes and gives is
read from its ONNX graph (names, datatypes, shapes); its name and version are the model card's.

REST, beside the contract's /predict:

    GET  /v2                                   server name, version, extensions
    GET  /v2/health/live, /v2/health/ready     200 exactly when /health, /ready are
    GET  /v2/models/{name}[/versions/{v}]      the model's tensors
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

An infer body is JSON (any Content-Type, or none: Triton's clients send none), or JSON followed
by raw tensor bytes when the Inference-Header-Content-Length header gives the JSON's length
(the binary tensor extension; Triton's clients use it by default). Errors are {"error": "..."}:
404 for an unknown model or version, 400 for a tensor the model cannot take, 503 while the
service is not ready.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictBool, ValidationError
from starlette.responses import Response

from shared.logs import request_id_var
from shared.service import Slot, add_hot_route, failing_checks

if TYPE_CHECKING:
    from shared.model import Predictor

PLATFORM = "onnxruntime_onnx"  # Triton's name for a model run by onnxruntime
EXTENSIONS = ["binary_tensor_data"]
BINARY_HEADER = "inference-header-content-length"

# The protocol's datatypes as numpy dtypes (little-endian on the wire, as numpy's on x86 and arm).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
NUMERIC = {name for name in DTYPES if name not in ("BOOL", "BYTES")}


class InferenceError(Exception):
    """A request the protocol refuses: 400 (bad tensor), 404 (no such model), 503 (not ready)."""

    def __init__(self, status: Literal[400, 404, 503], message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> InferenceError:
    return InferenceError(400, message)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the protocol's metadata gives it: -1 for any size."""

    name: str
    datatype: str
    shape: list[int]

    @classmethod
    def of(cls, node: Any) -> "TensorSpec":
        """From an onnxruntime NodeArg (its type is "tensor(float)", a free dimension None or a
        name)."""
        shape = [dim if isinstance(dim, int) else -1 for dim in node.shape]
        return cls(node.name, ONNX_DATATYPES.get(node.type, node.type), shape)

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class Tensor:
    name: str
    datatype: str
    array: np.ndarray[Any, Any]

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


def dtype_of(datatype: str, tensor: str) -> np.dtype[Any]:
    try:
        return DTYPES[datatype]
    except KeyError:
        raise bad(
            f"input {tensor!r}: unknown datatype {datatype!r} (one of {', '.join(DTYPES)})"
        ) from None


def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def from_values(name: str, datatype: str, shape: Sequence[int], data: Any) -> Tensor:
    """An input given as JSON values, flat or nested, row-major."""
    dtype = dtype_of(datatype, name)
    flat = _flatten(data)
    if len(flat) != _size(shape):
        raise bad(
            f"input {name!r}: shape {list(shape)} holds {_size(shape)} values, got {len(flat)}"
        )
    wrong = next((v for v in flat if not _is_value_of(datatype, v)), _NOTHING)
    if wrong is not _NOTHING:
        raise bad(f"input {name!r}: {json.dumps(wrong)} is not a {datatype} value")
    try:
        array = np.array(flat, dtype=dtype)
    except OverflowError:
        raise bad(f"input {name!r}: a value is out of the range of {datatype}") from None
    return Tensor(name, datatype, array.reshape(shape))


def from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """An input given as raw little-endian bytes (the binary extension, gRPC's raw contents)."""
    dtype = dtype_of(datatype, name)
    if datatype == "BYTES":
        array = _unpack_strings(name, raw)
        if array.size != _size(shape):
            raise bad(
                f"input {name!r}: shape {list(shape)} holds {_size(shape)} values, got {array.size}"
            )
    else:
        expected = _size(shape) * dtype.itemsize
        if len(raw) != expected:
            raise bad(
                f"input {name!r}: shape {list(shape)} of {datatype} is {expected} bytes, "
                f"got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=dtype)
    return Tensor(name, datatype, array.reshape(shape))


def to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(
            len(b).to_bytes(4, "little") + b
            for b in (v if isinstance(v, bytes) else str(v).encode() for v in tensor.array.flat)
        )
    return tensor.array.astype(DTYPES[tensor.datatype], copy=False).tobytes()


def to_values(tensor: Tensor) -> list[Any]:
    """The tensor's values, flat and row-major, as JSON takes them."""
    if tensor.datatype == "BYTES":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in tensor.array.flat]
    values: list[Any] = tensor.array.ravel().tolist()
    return values


_NOTHING = object()


def _is_value_of(datatype: str, value: Any) -> bool:
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool):  # a bool is an int to Python, never a number to the protocol
        return False
    if datatype.startswith("FP"):
        return isinstance(value, int | float)
    return isinstance(value, int)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _unpack_strings(name: str, raw: bytes) -> np.ndarray[Any, Any]:
    values, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise bad(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        length = int.from_bytes(raw[at : at + 4], "little")
        at += 4
        if at + length > len(raw):
            raise bad(f"input {name!r}: a BYTES element runs past the end of the data")
        values.append(raw[at : at + length])
        at += length
    return np.array(values, dtype=np.object_)


def check_model(predictor: "Predictor", name: str, version: str | None) -> None:
    """404 unless name (and version, when given) are the model this server serves."""
    card = predictor.card
    if name != card.name:
        raise InferenceError(404, f"unknown model {name!r}: this server serves {card.name!r}")
    if version and version != card.version:
        raise InferenceError(
            404, f"unknown version {version!r} of model {name!r}: this server serves {card.version}"
        )


def model_metadata(predictor: "Predictor") -> dict[str, Any]:
    return {
        "name": predictor.card.name,
        "versions": [predictor.card.version],
        "platform": PLATFORM,
        "inputs": [spec.json() for spec in predictor.inputs],
        "outputs": [spec.json() for spec in predictor.outputs],
    }


async def infer(
    predictor: "Predictor", inputs: list[Tensor], outputs: list[str] | None, max_rows: int
) -> list[Tensor]:
    """Run the model on the given inputs; the outputs asked for (all when None), in that order.

    Every input the model takes must be there once, with the model's rank and fixed dimensions
    and at most max_rows in its first (batch) dimension; numeric datatypes are converted to the
    model's (a JSON client's FP64 to an FP32 model), and values must be finite in it.
    """
    specs = {spec.name: spec for spec in predictor.inputs}
    given = {tensor.name: tensor for tensor in inputs}
    if len(given) != len(inputs):
        raise bad(f"an input is given twice: {[t.name for t in inputs]}")
    unknown = set(given) - set(specs)
    if unknown:
        raise bad(f"unknown input {sorted(unknown)[0]!r}: the model's inputs are {sorted(specs)}")
    feeds = {}
    for spec in predictor.inputs:
        if spec.name not in given:
            raise bad(f"input {spec.name!r} is missing: the model's inputs are {sorted(specs)}")
        feeds[spec.name] = _feed(given[spec.name], spec, max_rows)
    names = [spec.name for spec in predictor.outputs]
    if outputs is not None:
        for name in outputs:
            if name not in names:
                raise bad(f"unknown output {name!r}: the model's outputs are {names}")
        names = list(outputs)
    results = await predictor.arun(feeds, names)
    datatypes = {spec.name: spec.datatype for spec in predictor.outputs}
    tensors = [Tensor(n, datatypes[n], array) for n, array in zip(names, results, strict=True)]
    for tensor in tensors:
        if tensor.array.dtype.kind == "f" and not np.isfinite(tensor.array).all():
            rows = np.flatnonzero(~np.isfinite(tensor.array.reshape(len(tensor.array), -1)).all(1))
            raise bad(f"rows {rows.tolist()} are out of the model's numeric range")
    return tensors


def _feed(tensor: Tensor, spec: TensorSpec, max_rows: int) -> np.ndarray[Any, Any]:
    shape = tensor.shape
    expected = ", ".join("any" if d == -1 else str(d) for d in spec.shape)
    if len(shape) != len(spec.shape) or any(
        d != want for d, want in zip(shape, spec.shape, strict=True) if want != -1
    ):
        raise bad(f"input {spec.name!r}: shape {shape}, the model takes [{expected}]")
    if spec.shape and spec.shape[0] == -1 and not 1 <= shape[0] <= max_rows:
        raise bad(f"input {spec.name!r}: 1 to {max_rows} rows per request, got {shape[0]}")
    if tensor.datatype == spec.datatype:
        array = tensor.array
    elif tensor.datatype in NUMERIC and spec.datatype in NUMERIC:
        with np.errstate(over="ignore"):  # a value beyond the model's type: refused just below
            array = tensor.array.astype(DTYPES[spec.datatype])
    else:
        raise bad(
            f"input {spec.name!r}: datatype {tensor.datatype}, the model takes {spec.datatype}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise bad(
            f"input {spec.name!r}: values must be finite {spec.datatype} numbers "
            "(no NaN, no infinity, none beyond the type's range)"
        )
    return array


# REST: the JSON bodies, also the OpenAPI document's description of them.

Parameter = StrictBool | int | float | str


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[NonNegativeInt]
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Parameter] = {}
    data: list[Any] | None = Field(
        None, description="Values, flat or nested, row-major; absent when binary_data_size is set"
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Parameter] = {}


class InferenceRequest(BaseModel):
    # No examples here: a request depends on the model a server serves (its README shows one).
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Parameter] = {}
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Parameter] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[ResponseOutput]


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such model or version"},
    503: {"model": ErrorBody, "description": "Not ready (the model is loading)"},
}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A tensor the model cannot take, or a bad body"},
    408: {"description": "Body not received whole within BODY_TIMEOUT_SECONDS"},
    413: {"description": "Body larger than the service's limit (MAX_BODY_BYTES)"},
    **ERRORS,
}


def _parse(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[Tensor]]:
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad(
                f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                f"body's {len(body)} bytes"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise bad(_validation_message(exc)) from None
    tensors, at = [], 0
    for item in request.inputs:
        size = item.parameters.get("binary_data_size")
        if size is None:
            if item.data is None:
                raise bad(f"input {item.name!r} has no data (nor binary_data_size)")
            tensors.append(from_values(item.name, item.datatype, item.shape, item.data))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise bad(f"input {item.name!r}: binary_data_size must be a byte count, not {size!r}")
        if item.data is not None:
            raise bad(f"input {item.name!r} has both data and binary_data_size")
        if at + size > len(binary):
            raise bad(f"input {item.name!r}: binary data ends before its {size} bytes")
        tensors.append(from_bytes(item.name, item.datatype, item.shape, binary[at : at + size]))
        at += size
    if at != len(binary):
        raise bad(f"{len(binary) - at} bytes of binary data follow the last input's")
    return request, tensors


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def _binary_outputs(request: InferenceRequest, predictor: "Predictor") -> set[str]:
    """The outputs to send as raw bytes: those asked for with binary_data, or every one with the
    request's binary_data_output (what Triton's clients ask when they name no output)."""
    everything = request.parameters.get("binary_data_output") is True
    if request.outputs is None:
        return {spec.name for spec in predictor.outputs} if everything else set()
    binary = set()
    for output in request.outputs:
        unknown = set(output.parameters) - {"binary_data"}
        if unknown:
            raise bad(f"output {output.name!r}: parameter {sorted(unknown)[0]!r} is not supported")
        if output.parameters.get("binary_data", everything) is True:
            binary.add(output.name)
    return binary


def _answer(
    request: InferenceRequest, predictor: "Predictor", outputs: list[Tensor], binary: set[str]
) -> Response:
    blobs, described = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if tensor.name in binary:
            blob = to_bytes(tensor)
            blobs.append(blob)
            entry["parameters"] = {"binary_data_size": len(blob)}
        else:
            entry["data"] = to_values(tensor)
        described.append(entry)
    head = json.dumps(
        {
            "model_name": predictor.card.name,
            "model_version": predictor.card.version,
            # The caller's id, else this request's X-Request-ID (the contract's request_id).
            "id": request.id if request.id is not None else request_id_var.get(),
            "outputs": described,
        },
        separators=(",", ":"),
    ).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *blobs]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def add_open_inference_routes(
    app: FastAPI, model: "Slot[Predictor]", name: str, version: str, max_rows: int
) -> None:
    """The protocol's REST routes; name and version are the server's (GET /v2)."""

    async def not_served(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InferenceError)
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    app.add_exception_handler(InferenceError, not_served)

    def ready_model(model_name: str, model_version: str | None) -> "Predictor":
        predictor = model.value
        if predictor is None:
            raise InferenceError(503, model.not_ready_reason)
        check_model(predictor, model_name, model_version)
        return predictor

    async def require_ready() -> None:
        reasons = await failing_checks(app.state.readiness)
        if reasons:
            raise InferenceError(503, "; ".join(f"{k}: {v}" for k, v in reasons.items()))

    tags: list[str | Enum] = ["open inference protocol"]

    @app.get("/v2", tags=tags, summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": name, "version": version, "extensions": EXTENSIONS}

    @app.get("/v2/health/live", tags=tags, summary="200 exactly when /health is", responses=ERRORS)
    async def server_live() -> dict[str, bool]:
        reasons = await failing_checks(app.state.liveness)
        if reasons:
            raise InferenceError(503, "; ".join(f"{k}: {v}" for k, v in reasons.items()))
        return {"live": True}

    @app.get("/v2/health/ready", tags=tags, summary="200 exactly when /ready is", responses=ERRORS)
    async def server_ready() -> dict[str, bool]:
        await require_ready()
        return {"ready": True}

    model_path = "/v2/models/{model_name}"
    version_path = "/v2/models/{model_name}/versions/{model_version}"
    about = "Model metadata: its tensors, read from the ONNX graph"
    when_ready = "200 exactly when /ready is (and the model is this server's)"

    @app.get(model_path, tags=tags, summary=about, responses=ERRORS)
    async def model_metadata_latest(model_name: str) -> dict[str, Any]:
        return model_metadata(ready_model(model_name, None))

    @app.get(version_path, tags=tags, summary=about, responses=ERRORS)
    async def model_metadata_version(model_name: str, model_version: str) -> dict[str, Any]:
        return model_metadata(ready_model(model_name, model_version))

    @app.get(f"{model_path}/ready", tags=tags, summary=when_ready, responses=ERRORS)
    async def model_ready_latest(model_name: str) -> dict[str, Any]:
        ready_model(model_name, None)
        await require_ready()
        return {"name": model_name, "ready": True}

    @app.get(f"{version_path}/ready", tags=tags, summary=when_ready, responses=ERRORS)
    async def model_ready_version(model_name: str, model_version: str) -> dict[str, Any]:
        ready_model(model_name, model_version)
        await require_ready()
        return {"name": model_name, "ready": True}

    async def model_infer(request: Request) -> Response:
        """Run the model on the request's tensors (JSON, or JSON then binary tensor data)."""
        params = request.path_params
        predictor = ready_model(params["model_name"], params.get("model_version"))
        body, tensors = _parse(await request.body(), request.headers.get(BINARY_HEADER))
        requested = [o.name for o in body.outputs] if body.outputs is not None else None
        binary = _binary_outputs(body, predictor)
        outputs = await infer(predictor, tensors, requested, max_rows)
        return _answer(body, predictor, outputs, binary)

    # A hot route, as web single's /predict: the protocol's infer is held to 0.8 x its speed.
    for path, operation in (
        (model_path, "model_infer_latest"),
        (version_path, "model_infer_version"),
    ):
        add_hot_route(
            app,
            f"{path}/infer",
            model_infer,
            body=InferenceRequest,
            answer=InferenceResponse,
            summary="Inference",
            responses=INFER_ERRORS,
            tags=tags,
            operation_id=operation,
        )
