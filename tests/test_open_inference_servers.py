"""Every model server of the project answers Triton's own clients (tritonclient) over the Open
Inference Protocol, with the predictions its /predict gives for the same rows; web single also
over gRPC.

The servers are found, not listed (tests.conftest.model_servers: every compose service whose app
serves GET /v2, as every app built on create_model_service does). Each is started with its
pattern through local mode and called on its published ports.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx2
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from shared.catalogue import REPO_ROOT
from shared.testing import LocalPattern, pattern_running, wait_until
from tests.conftest import LastPattern, ModelServer, model_servers

pytestmark = pytest.mark.e2e

WEB_SINGLE = REPO_ROOT / "serving_patterns" / "web_single"


SERVERS = model_servers()


def test_the_model_servers_are_found() -> None:
    # The search above finds what it should: the landed model servers at least.
    assert {str(s) for s in SERVERS} >= {
        "web-single-api",
        "synchronous-predictor",
        "prep-pred-pred",
    }


@pytest.fixture(scope="module")
def started() -> Iterator[LastPattern]:
    last = LastPattern()
    yield last
    last.close()


# The tests of one pattern's servers in one group: one start of the pattern for all of them.
@pytest.fixture(
    params=[
        pytest.param(
            server, id=str(server), marks=pytest.mark.xdist_group(f"v2-{server.entry.slug}")
        )
        for server in SERVERS
    ],
)
def running(
    request: pytest.FixtureRequest, started: LastPattern
) -> tuple[ModelServer, LocalPattern]:
    server: ModelServer = request.param
    return server, started.get(server.entry)


def _http_client(server: ModelServer, pattern: LocalPattern) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(pattern.url(server.service).removeprefix("http://"))


def _sample(url: str) -> tuple[str, list[list[float]], dict[str, Any]]:
    """The model's name, its sample rows, and what /predict answers for them."""
    metadata = httpx2.get(f"{url}/metadata").json()
    rows = metadata["sample_input"]["data"] * 3  # several rows: batches of more than one
    answer = httpx2.post(f"{url}/predict", json={**metadata["sample_input"], "data": rows})
    assert answer.status_code == 200, answer.text
    return metadata["model_name"], rows, answer.json()


def _input(module: Any, rows: list[list[float]], datatype: str = "FP32") -> Any:
    tensor = module.InferInput("X", [len(rows), len(rows[0])], datatype)
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float32 if datatype == "FP32" else None))
    return tensor


def test_a_model_server_answers_tritonclients_http_calls_as_predict_does(
    running: tuple[ModelServer, LocalPattern],
) -> None:
    server, pattern = running
    client = _http_client(server, pattern)
    name, rows, predicted = _sample(pattern.url(server.service))

    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    binary = client.infer(name, [_input(triton_http, rows)])
    as_json = client.infer(
        name,
        [_input(triton_http, rows)],
        outputs=[triton_http.InferRequestedOutput("probabilities", binary_data=False)],
        request_id="tc-1",
    )

    labels = [p["label"] for p in predicted["predictions"]]
    probabilities = [list(p["probabilities"].values()) for p in predicted["predictions"]]
    assert metadata["versions"] == [predicted["model_version"]]
    assert metadata["inputs"][0]["shape"] == [-1, len(rows[0])]
    card_labels = list(predicted["predictions"][0]["probabilities"])
    assert [card_labels[i] for i in binary.as_numpy("label")] == labels
    assert binary.as_numpy("probabilities").tolist() == probabilities
    assert as_json.as_numpy("probabilities").tolist() == probabilities
    assert as_json.as_numpy("label") is None  # only what was asked for
    assert as_json.get_response()["id"] == "tc-1"


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (
            lambda c, rows: c.infer("no-such-model", [_input(triton_http, rows)]),
            "404",
            "unknown model",
        ),
        (
            lambda c, rows: c.infer("{model}", [_input(triton_http, rows)], model_version="0.0.0"),
            "404",
            "unknown version '0.0.0'",
        ),
        (
            lambda c, rows: c.infer("{model}", [_input(triton_http, [r[:-1] for r in rows])]),
            "400",
            "the model takes",
        ),
        (
            lambda c, rows: c.infer(
                "{model}", [_input(triton_http, [[float("nan")] * len(rows[0])])]
            ),
            "400",
            "values must be finite",
        ),
        (
            lambda c, rows: c.infer("{model}", [_input(triton_http, rows * 100)]),
            "400",
            "rows per request",
        ),
        (
            lambda c, rows: c.infer(
                "{model}",
                [_input(triton_http, rows)],
                outputs=[triton_http.InferRequestedOutput("score")],
            ),
            "400",
            "unknown output 'score'",
        ),
    ],
    ids=["model", "version", "shape", "nan", "rows", "output"],
)
def test_a_model_server_refuses_bad_tritonclient_calls_with_4xx_naming_the_problem(
    running: tuple[ModelServer, LocalPattern], call: Any, status: str, words: str
) -> None:
    server, pattern = running
    client = _http_client(server, pattern)
    name, rows, _ = _sample(pattern.url(server.service))

    class Named:  # "{model}" in a call stands for this server's model
        def infer(self, model: str, *args: Any, **kwargs: Any) -> Any:
            return client.infer(model.replace("{model}", name), *args, **kwargs)

    with pytest.raises(InferenceServerException) as refused:
        call(Named(), rows)

    assert refused.value.status() == status
    assert words in refused.value.message()


# gRPC, on web single


@pytest.fixture
def web_single(started: LastPattern) -> LocalPattern:
    return started.get(next(s.entry for s in SERVERS if s.entry.path == WEB_SINGLE))


# With web single's HTTP tests, in its group: the same start.
web_singles_group = pytest.mark.xdist_group("v2-web-single")


def _grpc_client(pattern: LocalPattern) -> triton_grpc.InferenceServerClient:
    port = pattern.addresses.ports["api"][8001]
    return triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")


@web_singles_group
def test_web_single_answers_tritonclients_grpc_calls_as_predict_does(
    web_single: LocalPattern,
) -> None:
    client = _grpc_client(web_single)
    name, rows, predicted = _sample(web_single.url("api"))

    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, model_version=predicted["model_version"])
    metadata = client.get_model_metadata(name, as_json=True)
    everything = client.infer(name, [_input(triton_grpc, rows)], request_id="grpc-1")
    selected = client.infer(
        name, [_input(triton_grpc, rows)], outputs=[triton_grpc.InferRequestedOutput("label")]
    )

    card_labels = list(predicted["predictions"][0]["probabilities"])
    labels = [p["label"] for p in predicted["predictions"]]
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [card_labels[i] for i in everything.as_numpy("label")] == labels
    assert everything.as_numpy("probabilities").tolist() == [
        list(p["probabilities"].values()) for p in predicted["predictions"]
    ]
    assert everything.get_response().id == "grpc-1"
    assert [o.name for o in selected.get_response().outputs] == ["label"]


@pytest.mark.parametrize(
    ("model", "version", "rows", "datatype", "code", "words"),
    [
        ("wine", "", [[5.1, 3.5, 1.4, 0.2]], "FP32", grpc.StatusCode.NOT_FOUND, "unknown model"),
        ("iris", "9", [[5.1, 3.5, 1.4, 0.2]], "FP32", grpc.StatusCode.NOT_FOUND, "unknown version"),
        ("iris", "", [[5.1, 3.5]], "FP32", grpc.StatusCode.INVALID_ARGUMENT, "the model takes"),
        (
            "iris",
            "",
            [[1.0, 2.0, 3.0, 4.0]] * 101,
            "FP32",
            grpc.StatusCode.INVALID_ARGUMENT,
            "1 to 100 rows",
        ),
        ("iris", "", [[1e300, 1.0, 1.0, 1.0]], "FP64", grpc.StatusCode.INVALID_ARGUMENT, "finite"),
    ],
    ids=["model", "version", "shape", "rows", "range"],
)
@web_singles_group
def test_web_single_refuses_bad_grpc_calls_with_status_codes_naming_the_problem(
    web_single: LocalPattern,
    model: str,
    version: str,
    rows: list[list[float]],
    datatype: str,
    code: grpc.StatusCode,
    words: str,
) -> None:
    client = _grpc_client(web_single)

    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, [_input(triton_grpc, rows, datatype)], model_version=version)

    assert refused.value.status() == str(code)
    assert words in refused.value.message()


@web_singles_group
def test_web_single_counts_grpc_calls_in_its_metrics(web_single: LocalPattern) -> None:
    client = _grpc_client(web_single)
    client.infer("iris", [_input(triton_grpc, [[5.1, 3.5, 1.4, 0.2]])])
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("wine")

    metrics = httpx2.get(f"{web_single.url('api')}/metrics").text

    assert 'grpc_requests_total{code="OK",method="ModelInfer",service="web-single"}' in metrics
    assert 'grpc_requests_total{code="NOT_FOUND",method="ModelMetadata",service="web-single"}' in (
        metrics
    )
    assert 'grpc_request_duration_seconds_count{method="ModelInfer",service="web-single"}' in (
        metrics
    )


@web_singles_group
def test_web_single_holds_grpc_messages_to_the_http_body_limit(web_single: LocalPattern) -> None:
    client = _grpc_client(web_single)
    oversized = np.zeros((100, 2600), dtype=np.float32)  # 1,040,000 bytes: over 1,000,000
    tensor = triton_grpc.InferInput("X", list(oversized.shape), "FP32")
    tensor.set_data_from_numpy(oversized)

    with pytest.raises(InferenceServerException) as refused:
        client.infer("iris", [tensor])

    assert refused.value.status() == str(grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_grpc_readiness_follows_the_model(tmp_path: Path) -> None:
    """ServerReady and ModelReady are false, and ModelInfer UNAVAILABLE, exactly while /ready is
    503: until the model's files appear."""
    rows = [[5.1, 3.5, 1.4, 0.2]]
    with pattern_running(WEB_SINGLE) as pattern:
        # The same service, started on a model folder that is still empty. (Not in this
        # process: tritonclient's gRPC messages and the server's share protobuf's one pool.)
        pattern.kill("api")
        pattern.start_replica("api", WEB_SINGLE_MODEL_DIR=str(tmp_path / "iris"))
        url, client = pattern.url("api"), _grpc_client(pattern)
        wait_until(lambda: "not loadable" in _text(f"{url}/ready"), what="a failed load")
        before = (_status(url), client.is_server_ready(), client.is_model_ready("iris"))
        with pytest.raises(InferenceServerException) as unavailable:
            client.infer("iris", [_input(triton_grpc, rows)])
        shutil.copytree(REPO_ROOT / "models" / "iris", tmp_path / "iris")
        wait_until(lambda: _status(url) == 200, what="model loaded")
        after = (_status(url), client.is_server_ready(), client.is_model_ready("iris"))
        answered = client.infer("iris", [_input(triton_grpc, rows)])

    assert before == (503, False, False)
    assert unavailable.value.status() == str(grpc.StatusCode.UNAVAILABLE)
    assert "model not loadable" in unavailable.value.message()
    assert after == (200, True, True)
    assert answered.as_numpy("label").tolist() == [0]


def _status(url: str) -> int:
    return httpx2.get(f"{url}/ready", timeout=5).status_code


def _text(url: str) -> str:
    try:
        return httpx2.get(url, timeout=5).text
    except httpx2.HTTPError:  # the new copy is not listening yet
        return ""
