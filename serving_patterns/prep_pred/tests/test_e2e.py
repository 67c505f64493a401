"""End to end: prep and pred started from compose.yaml through local mode, over HTTP.

Fault isolation kills one real process and restarts it, as a container restart would.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from serving_patterns.prep_pred.schemas import SAMPLE_FEATURES, SAMPLE_IMAGE
from shared.testing import LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]
ONE = [  # digit 1 of the data set
    [0, 0, 0, 12, 13, 5, 0, 0],
    [0, 0, 0, 11, 16, 9, 0, 0],
    [0, 0, 3, 15, 16, 6, 0, 0],
    [0, 7, 15, 16, 16, 2, 0, 0],
    [0, 0, 1, 16, 16, 3, 0, 0],
    [0, 0, 1, 16, 16, 6, 0, 0],
    [0, 0, 1, 16, 16, 6, 0, 0],
    [0, 0, 0, 11, 16, 10, 0, 0],
]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running() -> Iterator[LocalPattern]:
    # DEBUG on pred: successful requests are logged too, to follow the request id there.
    with pattern_running(PATTERN, PREP_PRED_PRED_LOG_LEVEL="DEBUG") as pattern:
        yield pattern


def predict_raw(pattern: LocalPattern, **headers: str) -> httpx2.Response:
    return httpx2.post(
        f"{pattern.url('prep')}/predict", json={"data": [SAMPLE_IMAGE, ONE]}, headers=headers
    )


def prediction_or_none(pattern: LocalPattern) -> httpx2.Response | None:
    """A 200 through prep, or None while a service is still (re)starting."""
    try:
        response = predict_raw(pattern)
    except httpx2.TransportError:
        return None
    return response if response.status_code == 200 else None


def test_client_sends_raw_images_and_prep_then_pred_predict(running: LocalPattern) -> None:
    response = predict_raw(running)

    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == ["0", "1"]
    assert body["model_version"] == body["preprocess_version"] == "1.0.0"


def test_pred_refuses_raw_images_sent_to_it_directly(running: LocalPattern) -> None:
    raw = {"data": [SAMPLE_IMAGE], "preprocess_version": "1.0.0"}

    response = httpx2.post(f"{running.url('pred')}/predict", json=raw)

    assert response.status_code == 422
    assert "these look like raw images" in response.text


def test_request_id_flows_from_prep_to_pred(running: LocalPattern) -> None:
    response = predict_raw(running, **{"X-Request-ID": "trace-prep-pred-1"})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-prep-pred-1"
    # request_id in the body is pred's: pred saw the id prep was given.
    assert response.json()["request_id"] == "trace-prep-pred-1"
    line = wait_until(
        lambda: next(
            (ln for ln in running.logs("pred").splitlines() if "trace-prep-pred-1" in ln), None
        ),
        timeout=10,
        what="pred's log line of the request",
    )
    record = json.loads(line)
    assert record["service"] == "pred"
    assert record["message"].startswith("POST /predict 200")


def test_prep_and_pred_are_separate_processes(running: LocalPattern) -> None:
    prep, pred = running.processes["prep"][0], running.processes["pred"][0]

    assert prep.pid != pred.pid
    assert "prep_pred.prep:create_app" in " ".join(prep.args)
    assert "prep_pred.pred:create_app" in " ".join(pred.args)


def test_prep_stays_healthy_while_pred_is_down_and_recovers_by_itself() -> None:
    with pattern_running(PATTERN) as pattern:
        prep = pattern.url("prep")
        assert predict_raw(pattern).status_code == 200  # keep-alive connections to pred exist

        pattern.kill("pred", 0)
        health = httpx2.get(f"{prep}/health")
        down = predict_raw(pattern)

        pattern.start_replica("pred")
        recovered = wait_until(
            lambda: prediction_or_none(pattern),
            timeout=60,
            interval=0.2,
            what="predictions through the restarted pred",
        )

    assert health.status_code == 200
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert down.json()["detail"].startswith("the prediction service is unreachable")
    assert [p["label"] for p in recovered.json()["predictions"]] == ["0", "1"]


def test_pred_stays_healthy_while_prep_is_down_and_prep_recovers() -> None:
    features = {"data": [SAMPLE_FEATURES], "preprocess_version": "1.0.0"}
    with pattern_running(PATTERN) as pattern:
        pred = pattern.url("pred")

        pattern.kill("prep", 0)
        health = httpx2.get(f"{pred}/health")
        ready = httpx2.get(f"{pred}/ready")
        direct = httpx2.post(f"{pred}/predict", json=features)

        pattern.start_replica("prep")
        recovered = wait_until(
            lambda: prediction_or_none(pattern),
            timeout=60,
            interval=0.2,
            what="predictions through the restarted prep",
        )

    assert health.status_code == 200
    assert ready.status_code == 200
    assert direct.status_code == 200
    assert direct.json()["predictions"][0]["label"] == "0"
    assert recovered.json()["preprocess_version"] == "1.0.0"


def test_prep_with_a_preprocessing_of_another_version_is_refused(
    digits_dir: Path, tmp_path: Path
) -> None:
    # A prep deployed with a preprocessing that was not fitted with pred's model.
    params = json.loads((digits_dir / "preprocess.json").read_text())
    params["version"] = "1.1.0"
    other = tmp_path / "preprocess.json"
    other.write_text(json.dumps(params))

    with pattern_running(PATTERN, PREP_PRED_PREP_PREPROCESS_PATH=str(other)) as pattern:
        response = predict_raw(pattern)

    assert response.status_code == 503
    assert response.json()["detail"] == (
        "prediction service refused: preprocessing version 1.1.0 does not match model version "
        "1.0.0: features must come from the preprocessing fitted with this model"
    )
