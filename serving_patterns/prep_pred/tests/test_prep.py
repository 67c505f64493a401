"""In-process tests of the preprocess service: raw images in, clear errors when pred fails."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving_patterns.prep_pred.prep import create_app
from serving_patterns.prep_pred.schemas import SAMPLE_IMAGE
from serving_patterns.prep_pred.settings import PrepSettings
from shared.testing import free_port, ready_client, wait_until


def prep_client(
    digits_dir: Path, pred_url: str, **settings: Any
) -> AbstractContextManager[TestClient]:
    # Any: fields of PrepSettings, of several types, that pydantic validates.
    return ready_client(
        create_app(
            PrepSettings(
                preprocess_path=str(digits_dir / "preprocess.json"), pred_url=pred_url, **settings
            )
        )
    )


@pytest.fixture
def prep_alone(digits_dir: Path) -> Iterator[TestClient]:
    """prep with no pred behind it: a port nobody listens on."""
    with prep_client(digits_dir, f"http://127.0.0.1:{free_port()}", max_rows=3) as client:
        yield client


def test_prep_stays_up_and_answers_503_when_pred_is_unreachable(prep_alone: TestClient) -> None:
    response = prep_alone.post("/predict", json={"data": [SAMPLE_IMAGE]})

    assert prep_alone.get("/health").status_code == 200
    assert prep_alone.get("/ready").status_code == 200
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "the prediction service is unreachable (ConnectError)"


def test_prep_answers_504_when_pred_does_not_answer_in_time(digits_dir: Path) -> None:
    # A listening socket that never accepts: the connection opens, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with prep_client(digits_dir, url, pred_timeout_seconds=0.2) as client:
            started = time.monotonic()
            response = client.post("/predict", json={"data": [SAMPLE_IMAGE]})
            elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json()["detail"] == "the prediction service did not answer within 0.2 s"
    assert elapsed < 1.5  # about the deadline, far below pred's silence (forever)


def test_prep_sheds_with_503_at_once_past_its_calls_in_flight_to_pred(digits_dir: Path) -> None:
    # pred accepts and never answers; one call in flight is prep's limit here.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with prep_client(digits_dir, url, pred_timeout_seconds=3, pred_max_in_flight=1) as client:
            waiting = threading.Thread(
                target=client.post, args=("/predict",), kwargs={"json": {"data": [SAMPLE_IMAGE]}}
            )
            waiting.start()
            wait_until(lambda: client.app.state.pred._in_flight == 1, what="a call in flight")  # type: ignore[attr-defined]
            started = time.monotonic()
            shed = client.post("/predict", json={"data": [SAMPLE_IMAGE]})
            elapsed = time.monotonic() - started
            waiting.join(timeout=10)

    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["detail"] == "the prediction service is saturated (calls in flight: 1)"
    assert elapsed < 1  # at once, not after pred's 3 s deadline


def test_prep_is_not_ready_without_its_preprocessing(tmp_path: Path) -> None:
    settings = PrepSettings(preprocess_path=str(tmp_path / "missing.json"))
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        # The first load attempt runs in a thread: wait for it to have failed, not for luck.
        wait_until(
            lambda: "not loadable" in client.get("/ready").json()["reasons"]["preprocessing"],
            what="a failed load attempt",
        )
        ready = client.get("/ready")
        predict = client.post("/predict", json={"data": [SAMPLE_IMAGE]})

    assert health.status_code == 200
    assert ready.status_code == 503
    assert "preprocessing not loadable" in ready.json()["reasons"]["preprocessing"]
    assert predict.status_code == 503


def with_pixel(value: object) -> list[list[object]]:
    image: list[list[object]] = [list(row) for row in SAMPLE_IMAGE]
    image[2][3] = value
    return image


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [SAMPLE_IMAGE[:7]]}, "at least 8 items after validation, not 7"),
        ({"data": [[*SAMPLE_IMAGE[:7], [0] * 9]]}, "at most 8 items after validation, not 9"),
        ({"data": [with_pixel(17)]}, "less than or equal to 16"),
        ({"data": [with_pixel(-1)]}, "greater than or equal to 0"),
        ({"data": [with_pixel(3.5)]}, "fractional part"),
        ({"data": [with_pixel("3")]}, "not a number"),
        ({"data": [with_pixel(True)]}, "not a number"),
        ({"data": [sum(SAMPLE_IMAGE, [])]}, "at most 8 items after validation, not 64"),
        ({"data": []}, "at least 1 item"),
        ({"data": [SAMPLE_IMAGE] * 4}, "at most 3 images per request, got 4"),
        ({"data": [SAMPLE_IMAGE], "extra": 1}, "Extra inputs are not permitted"),
    ],
    ids=[
        "short", "wide", "too-bright", "negative", "fractional", "string", "boolean", "flat",
        "empty", "too-many", "extra",
    ],
)  # fmt: skip
def test_predict_rejects_bad_images_naming_the_problem(
    prep_alone: TestClient, payload: object, problem: str
) -> None:
    response = prep_alone.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


def test_metadata_describes_the_raw_input_with_a_sample(prep_alone: TestClient) -> None:
    metadata = prep_alone.get("/metadata").json()

    assert metadata["model_version"] == "1.0.0"
    assert len(metadata["feature_names"]) == 64
    assert metadata["sample_input"] == {"data": [SAMPLE_IMAGE]}
    assert metadata["extra"]["model_input"][:2] == ["pc_1", "pc_2"]
