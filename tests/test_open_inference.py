"""The Open Inference Protocol of shared/open_inference.py, in process: tensors in and out, the
checks that make a bad tensor a 400 naming the problem, the REST routes, the binary extension,
and the committed gRPC code being what the .proto generates. tritonclient against the running
servers: tests/test_open_inference_servers.py."""

import asyncio
import filecmp
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shared.catalogue import REPO_ROOT
from shared.model import Predictor, create_model_service
from shared.open_inference import InferenceError, Tensor, from_bytes, from_values, infer, to_bytes
from shared.protocol import generate
from shared.settings import ModelServiceSettings
from shared.testing import ready_client, wait_until

MODEL_DIR = REPO_ROOT / "models" / "iris"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(MODEL_DIR)


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = ModelServiceSettings(model_dir=str(MODEL_DIR), max_rows=5)
    app, _ = create_model_service("v2-test", settings)
    with ready_client(app) as client:
        yield client


def run_infer(*args: Any, **kwargs: Any) -> list[Tensor]:
    return asyncio.run(infer(*args, **kwargs))


def _tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "X") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _infer(client: TestClient, *inputs: dict[str, Any], **body: Any) -> Any:
    return client.post("/v2/models/iris/infer", json={"inputs": list(inputs), **body})


# Tensors


@pytest.mark.parametrize("data", [ROWS, [v for row in ROWS for v in row]], ids=["nested", "flat"])
def test_json_values_flat_or_nested_make_the_same_row_major_tensor(data: Any) -> None:
    tensor = from_values("X", "FP32", [2, 4], data)

    assert tensor.array.dtype == np.float32
    assert tensor.array.tolist() == np.array(ROWS, dtype=np.float32).tolist()


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("FP32", [1.0, "2"], '"2" is not a FP32 value'),
        ("FP32", [1.0, True], "true is not a FP32 value"),
        ("INT64", [1, 2.5], "2.5 is not a INT64 value"),
        ("UINT8", [1, 300], "out of the range of UINT8"),
        ("BOOL", [True, 1], "1 is not a BOOL value"),
        ("FP99", [1.0, 2.0], "unknown datatype 'FP99'"),
        ("FP32", [1.0, 2.0, 3.0], "shape [2] holds 2 values, got 3"),
    ],
)
def test_json_values_that_do_not_fit_the_datatype_or_shape_are_named(
    datatype: str, data: list[Any], words: str
) -> None:
    with pytest.raises(InferenceError) as refused:
        from_values("X", datatype, [2], data)

    assert refused.value.status == 400
    assert words in refused.value.message


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "UINT16", "BOOL", "BYTES"])
def test_bytes_round_trip_every_family_of_datatype(datatype: str) -> None:
    values = {"BOOL": [True, False, True, True], "BYTES": ["a", "", "ü", "xyz"]}.get(
        datatype, [1, 2, 3, 4]
    )
    tensor = from_values("T", datatype, [2, 2], values)

    again = from_bytes("T", datatype, [2, 2], to_bytes(tensor))

    decoded = [v.decode() if isinstance(v, bytes) else v for v in again.array.flat]
    assert decoded == list(tensor.array.flat)


def test_raw_bytes_of_the_wrong_length_are_named() -> None:
    with pytest.raises(InferenceError, match=r"shape \[2, 4\] of FP32 is 32 bytes, got 28"):
        from_bytes("X", "FP32", [2, 4], b"\0" * 28)


# The model's checks


def test_infer_gives_the_outputs_asked_for_and_the_predictions_of_predict(
    predictor: Predictor,
) -> None:
    tensor = from_values("X", "FP32", [2, 4], ROWS)

    label, probabilities = run_infer(predictor, [tensor], ["label", "probabilities"], max_rows=5)
    only = run_infer(predictor, [tensor], ["probabilities"], max_rows=5)

    predictions = predictor.predict(ROWS)
    assert [predictor.card.labels[i] for i in label.array] == [p["label"] for p in predictions]
    assert probabilities.array.tolist() == [list(p["probabilities"].values()) for p in predictions]
    assert [t.name for t in only] == ["probabilities"]


@pytest.mark.parametrize(
    ("tensor", "outputs", "words"),
    [
        (
            Tensor("X", "FP32", np.zeros((2, 3), np.float32)),
            None,
            "shape [2, 3], the model takes [any, 4]",
        ),
        (Tensor("X", "FP32", np.zeros(4, np.float32)), None, "shape [4], the model takes [any, 4]"),
        (Tensor("X", "FP32", np.zeros((6, 4), np.float32)), None, "1 to 5 rows per request, got 6"),
        (Tensor("X", "FP32", np.zeros((0, 4), np.float32)), None, "1 to 5 rows per request, got 0"),
        (Tensor("Y", "FP32", np.zeros((1, 4), np.float32)), None, "unknown input 'Y'"),
        (
            Tensor("X", "BYTES", np.array([["a"] * 4], object)),
            None,
            "datatype BYTES, the model takes FP32",
        ),
        (Tensor("X", "FP64", np.array([[1e300, 1, 1, 1]])), None, "values must be finite FP32"),
        (Tensor("X", "FP32", np.array([[np.nan, 1, 1, 1]], np.float32)), None, "finite FP32"),
        (Tensor("X", "FP32", np.zeros((1, 4), np.float32)), ["score"], "unknown output 'score'"),
    ],
)
def test_a_tensor_the_model_cannot_take_is_a_400_naming_the_problem(
    predictor: Predictor, tensor: Tensor, outputs: list[str] | None, words: str
) -> None:
    with pytest.raises(InferenceError) as refused:
        run_infer(predictor, [tensor], outputs, max_rows=5)

    assert refused.value.status == 400
    assert words in refused.value.message


def test_numeric_datatypes_are_converted_to_the_models(predictor: Predictor) -> None:
    as_fp64 = from_values("X", "FP64", [2, 4], ROWS)
    as_int = from_values("X", "INT64", [1, 4], [5, 3, 1, 0])

    fp64 = run_infer(predictor, [as_fp64], ["probabilities"], max_rows=5)[0]
    fp32 = run_infer(predictor, [from_values("X", "FP32", [2, 4], ROWS)], ["probabilities"], 5)[0]

    assert fp64.array.tolist() == fp32.array.tolist()
    assert run_infer(predictor, [as_int], ["label"], max_rows=5)[0].array.tolist() == [0]


def test_extreme_but_finite_inputs_whose_scores_overflow_are_a_400(predictor: Predictor) -> None:
    tensor = from_values("X", "FP32", [2, 4], [[5.1, 3.5, 1.4, 0.2], [3e38, -3e38, 3e38, -3e38]])

    with pytest.raises(InferenceError, match=r"rows \[1\] are out of the model's numeric range"):
        run_infer(predictor, [tensor], None, max_rows=5)


# REST, in process


def test_server_and_model_metadata_come_from_the_card_and_the_onnx_graph(
    client: TestClient,
) -> None:
    server = client.get("/v2").json()
    model = client.get("/v2/models/iris").json()
    versioned = client.get("/v2/models/iris/versions/1.0.0").json()

    assert server["name"] == "v2-test"
    assert "binary_tensor_data" in server["extensions"]
    assert model == versioned
    assert model["versions"] == ["1.0.0"]
    assert model["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert model["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_infer_answers_json_with_the_callers_id_or_the_request_id(client: TestClient) -> None:
    named = _infer(client, _tensor(ROWS, [2, 4]), id="mine", outputs=[{"name": "label"}])
    unnamed = client.post(
        "/v2/models/iris/versions/1.0.0/infer",
        json={"inputs": [_tensor(ROWS, [2, 4])]},
        headers={"X-Request-ID": "trace-1"},
    )

    assert named.status_code == 200
    assert named.json()["id"] == "mine"
    assert named.json()["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    ]
    assert unnamed.json()["id"] == "trace-1"
    assert [o["name"] for o in unnamed.json()["outputs"]] == ["label", "probabilities"]


def test_the_binary_extension_carries_inputs_and_outputs_as_raw_bytes(client: TestClient) -> None:
    raw = np.array(ROWS, dtype=np.float32).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities"},
            ],
        }
    ).encode()

    # No Content-Type, as Triton's clients send it.
    answer = client.post(
        "/v2/models/iris/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )

    assert answer.status_code == 200
    length = int(answer.headers["inference-header-content-length"])
    described = json.loads(answer.content[:length])
    label, probabilities = described["outputs"]
    assert label["parameters"] == {"binary_data_size": 16}
    assert struct.unpack("<2q", answer.content[length:]) == (0, 2)
    assert len(probabilities["data"]) == 6


HEAD_OF_16_BYTES = json.dumps(
    {"inputs": [{**_tensor(None, [1, 4]), "data": None, "parameters": {"binary_data_size": 16}}]}
).encode()


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        (b'{"inputs": [', {}, "Invalid JSON"),
        (b'{"inputs": []}', {}, "inputs: List should have at least 1 item"),
        (b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32"}]}', {}, "has no data"),
        (b'{"inputs": [], "extra": 1}', {}, "extra: Extra inputs are not permitted"),
        (b'{"inputs": [{"name": "X"}]}', {"Inference-Header-Content-Length": "99"}, "not a length"),
        (
            HEAD_OF_16_BYTES + b"\0" * 4,
            {"Inference-Header-Content-Length": str(len(HEAD_OF_16_BYTES))},
            "binary data ends before its 16 bytes",
        ),
        (b'\xff{"inputs": []}', {}, "Invalid JSON"),
        (
            json.dumps(
                {
                    "inputs": [_tensor(ROWS[0], [1, 4])],
                    "outputs": [{"name": "label", "parameters": {"classification": 2}}],
                }
            ).encode(),
            {},
            "output 'label': parameter 'classification' is not supported",
        ),
    ],
)
def test_a_bad_infer_body_is_a_400_in_the_protocols_error_shape(
    client: TestClient, body: bytes, headers: dict[str, str], words: str
) -> None:
    answer = client.post("/v2/models/iris/infer", content=body, headers=headers)

    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"], answer.json()


def test_unknown_models_and_versions_are_404_on_every_route(client: TestClient) -> None:
    body = {"inputs": [_tensor(ROWS, [2, 4])]}
    answers = [
        client.get("/v2/models/wine"),
        client.get("/v2/models/iris/versions/2.0.0"),
        client.get("/v2/models/wine/ready"),
        client.get("/v2/models/iris/versions/2.0.0/ready"),
        client.post("/v2/models/wine/infer", json=body),
        client.post("/v2/models/iris/versions/2.0.0/infer", json=body),
    ]

    assert [a.status_code for a in answers] == [404] * 6
    assert "unknown model 'wine': this server serves 'iris'" in answers[0].json()["error"]
    assert "unknown version '2.0.0'" in answers[1].json()["error"]


def test_the_body_limit_holds_and_answers_in_the_protocols_shape() -> None:
    settings = ModelServiceSettings(model_dir=str(MODEL_DIR), max_body_bytes=200)
    app, _ = create_model_service("v2-test", settings)
    with ready_client(app) as client:
        answer = _infer(client, _tensor([[5.1, 3.5, 1.4, 0.2]] * 10, [10, 4]))

    assert answer.status_code == 413
    assert answer.json() == {"error": "request body larger than 200 bytes"}


def test_readiness_follows_the_models_until_it_loads(tmp_path: Path) -> None:
    settings = ModelServiceSettings(model_dir=str(tmp_path / "iris"))
    app, _ = create_model_service("v2-test", settings)
    with TestClient(app) as client:
        wait_until(lambda: "not loadable" in client.get("/ready").text, what="a failed load")
        before = _answers(client)
        shutil.copytree(MODEL_DIR, tmp_path / "iris")
        wait_until(lambda: client.get("/ready").status_code == 200, what="model loaded")
        after = _answers(client)

    not_ready = {"/ready": 503, "/v2/health/ready": 503, "/v2/models/iris/ready": 503}
    assert before == {**not_ready, "infer": 503, "/v2/health/live": 200}
    assert after == {**dict.fromkeys(not_ready, 200), "infer": 200, "/v2/health/live": 200}


def _answers(client: TestClient) -> dict[str, int]:
    paths = ["/ready", "/v2/health/ready", "/v2/models/iris/ready", "/v2/health/live"]
    found = {path: client.get(path).status_code for path in paths}
    found["infer"] = _infer(client, _tensor(ROWS, [2, 4])).status_code
    return found


def test_a_not_ready_answer_names_the_reason_and_asks_to_retry(tmp_path: Path) -> None:
    app, _ = create_model_service("v2-test", ModelServiceSettings(model_dir=str(tmp_path)))
    with TestClient(app) as client:
        wait_until(lambda: "not loadable" in client.get("/ready").text, what="a failed load")
        answer = client.get("/v2/health/ready")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "model not loadable from" in answer.json()["error"]


def test_the_routes_are_in_the_openapi_document_for_the_fuzzer(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    infer_operation = paths["/v2/models/{model_name}/infer"]["post"]
    assert infer_operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "InferenceRequest"
    )
    assert [p["name"] for p in infer_operation["parameters"]] == ["model_name"]
    assert "/v2/models/{model_name}/versions/{model_version}/ready" in paths


# The generated gRPC code


def test_the_committed_grpc_code_is_what_the_proto_generates(tmp_path: Path) -> None:
    generate.generate(tmp_path)

    committed = REPO_ROOT / "shared" / "protocol"
    stale = [
        name for name in generate.GENERATED if not filecmp.cmp(tmp_path / name, committed / name)
    ]
    assert not stale, (
        f"{stale} differ from the .proto: run .venv/bin/python -m shared.protocol.generate"
    )
