"""One contract suite, run against every generated service: same routes, schemas, errors, health,
metrics and log format, whatever the model.

The services: iris generated from the newest template release (v2); digits generated from the
previous one (v1), as it stands and after `copier update` to v2; and the two services committed
in this folder, started by local mode as `make run` starts them. Each is a real uvicorn process.
"""

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx2
import pytest

from serving_patterns.serving_template.tests.fleet import (
    PATTERN,
    Service,
    commit_all,
    generate,
    git,
    model_card,
    serving,
    update,
)
from shared.testing import pattern_running, requests_counted, wait_until

pytestmark = pytest.mark.e2e

# id: (service, model, the release it is generated from, the release `copier update` moves it to)
GENERATED = {
    "iris@v2": ("iris", "iris", "v2", None),
    "digits@v1": ("digits", "digits", "v1", None),
    "digits@v1-updated-to-v2": ("digits", "digits", "v1", "v2"),
}
COMMITTED = ["committed-iris", "committed-digits"]


@pytest.fixture(scope="module")
def committed_fleet() -> Iterator[dict[str, Service]]:
    """This folder's two services, started from compose.yaml through local mode."""
    with pattern_running(PATTERN) as pattern:
        yield {
            name: Service(name, pattern.url(name), model_card(name), partial(pattern.logs, name))
            for name in ("iris", "digits")
        }


@pytest.fixture(scope="module", params=[*GENERATED, *COMMITTED])
def service(
    request: pytest.FixtureRequest, template_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    if request.param in COMMITTED:
        yield request.getfixturevalue("committed_fleet")[request.param.split("-")[1]]
        return
    name, model, release, update_to = GENERATED[request.param]
    root = tmp_path_factory.mktemp(request.param)
    fleet = root / "fleet"  # the fleet's repository (copier update wants one), package "fleet"
    fleet.mkdir()
    git(fleet, "init", "--quiet")
    generate(template_repo, fleet, release, service=name, model=model, package="fleet")
    commit_all(fleet, f"{name} from the template's {release}")
    if update_to:
        update(fleet, name, update_to)
    with serving(fleet, name, root / f"{name}.log") as running:
        yield running


def test_health_and_ready_answer_200(service: Service) -> None:
    health = httpx2.get(f"{service.url}/health", timeout=10)
    ready = httpx2.get(f"{service.url}/ready", timeout=10)

    assert health.status_code == 200
    assert ready.status_code == 200


def test_metadata_describes_the_services_own_model(service: Service) -> None:
    response = httpx2.get(f"{service.url}/metadata", timeout=10)

    assert response.status_code == 200
    metadata = response.json()
    card = service.card
    assert metadata["model_name"] == card["name"]
    assert metadata["model_version"] == card["version"]
    assert metadata["feature_names"] == card["feature_names"]
    assert metadata["labels"] == card["labels"]
    assert metadata["sample_input"] == {"data": card["sample_input"]}


def test_predict_answers_each_row_with_a_label_and_probabilities(service: Service) -> None:
    rows = service.card["sample_input"] * 2
    response = httpx2.post(
        f"{service.url}/predict",
        json={"data": rows},
        headers={"X-Request-ID": "contract-1"},
        timeout=10,
    )

    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"]) == len(rows)
    for prediction in body["predictions"]:
        assert prediction["label"] in service.card["labels"]
        assert list(prediction["probabilities"]) == service.card["labels"]
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        best = max(prediction["probabilities"], key=prediction["probabilities"].__getitem__)
        assert prediction["label"] == best
    assert body["model_version"] == service.card["version"]
    assert body["request_id"] == response.headers["x-request-id"] == "contract-1"


def test_predict_refuses_a_row_of_the_wrong_width_naming_it(service: Service) -> None:
    width = len(service.card["feature_names"])
    response = httpx2.post(f"{service.url}/predict", json={"data": [[0.5] * (width + 1)]})

    assert response.status_code == 422
    assert f"expected {width} features" in response.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "problem"),
    [
        (b'{"data": [[1,', "application/json", 422, "Invalid JSON"),
        (b'{"data": [[1]]}', "text/plain", 415, "must be application/json"),
        (b'{"rows": [[1]]}', "application/json", 422, "Field required"),
    ],
)
def test_predict_refuses_bad_bodies_with_a_4xx_naming_the_problem(
    service: Service, body: bytes, content_type: str, status: int, problem: str
) -> None:
    response = httpx2.post(
        f"{service.url}/predict", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == status
    assert problem in response.text


def test_open_inference_protocol_serves_the_same_model(service: Service) -> None:
    name, rows = service.card["name"], service.card["sample_input"]
    server = httpx2.get(f"{service.url}/v2", timeout=10)
    model = httpx2.get(f"{service.url}/v2/models/{name}", timeout=10)
    tensor = model.json()["inputs"][0]
    infer = httpx2.post(
        f"{service.url}/v2/models/{name}/infer",
        json={
            "inputs": [
                {
                    "name": tensor["name"],
                    "shape": [len(rows), len(rows[0])],
                    "datatype": tensor["datatype"],
                    "data": [value for row in rows for value in row],
                }
            ]
        },
        timeout=10,
    )
    predicted = httpx2.post(f"{service.url}/predict", json={"data": rows}, timeout=10).json()

    assert server.status_code == 200
    assert server.json()["name"] == service.name
    assert model.status_code == 200
    assert tensor["shape"][-1] == len(service.card["feature_names"])
    assert infer.status_code == 200
    outputs = {output["name"]: output for output in infer.json()["outputs"]}
    probabilities = next(o for o in outputs.values() if o["datatype"] == "FP32")
    expected = list(predicted["predictions"][0]["probabilities"].values())
    assert probabilities["data"] == pytest.approx(expected, abs=1e-6)


def test_metrics_count_the_services_requests(service: Service) -> None:
    def counted() -> float:
        metrics = httpx2.get(f"{service.url}/metrics", timeout=10).text
        return requests_counted(metrics, service=service.name, route="/predict", status="200")

    before = counted()
    httpx2.post(f"{service.url}/predict", json={"data": service.card["sample_input"]})

    assert counted() == before + 1


def test_logs_are_json_lines_naming_the_service_and_the_request(service: Service) -> None:
    # A refused request is logged at INFO, with its id: the line to find.
    httpx2.post(
        f"{service.url}/predict", json={"data": []}, headers={"X-Request-ID": "contract-log-1"}
    )
    line = wait_until(
        lambda: next((ln for ln in service.logs().splitlines() if "contract-log-1" in ln), None),
        timeout=10,
        what=f"{service.name}'s log line for contract-log-1",
    )

    record = json.loads(line[line.index("{") :])
    assert {"time", "level", "logger", "message", "request_id", "service"} <= set(record)
    assert record["service"] == service.name
    assert record["request_id"] == "contract-log-1"
