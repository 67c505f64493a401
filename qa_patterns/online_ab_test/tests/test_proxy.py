"""proxy.py on its own, in front of stub models (served over loopback) that count their calls:
the weights API, and what a client gets when the chosen model fails."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from pydantic import HttpUrl

from qa_patterns.online_ab_test.proxy import create_app
from qa_patterns.online_ab_test.settings import ProxySettings
from qa_patterns.online_ab_test.split import assign
from shared.testing import free_port, served

ROWS = {"data": [[5.1, 3.5, 1.4, 0.2]]}
A_USER = next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) == "a")
B_USER = next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) == "b")


@dataclass
class Stub:
    calls: int = 0


def stub_model(name: str, stub: Stub) -> FastAPI:
    app = FastAPI()

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> dict[str, Any]:
        stub.calls += 1
        return {
            "predictions": [{"label": name, "probabilities": {name: 1.0}}],
            "model_version": "1.0.0",
            "request_id": "from-the-model",
        }

    return app


@contextmanager
def proxy(b_down: bool = False, **settings: Any) -> Iterator[tuple[str, Stub, Stub]]:
    a, b = Stub(), Stub()
    with served(stub_model("from-a", a)) as a_url, served(stub_model("from-b", b)) as b_url:
        b_url = f"http://127.0.0.1:{free_port()}" if b_down else b_url  # nothing listens there
        config = ProxySettings(model_a_url=HttpUrl(a_url), model_b_url=HttpUrl(b_url), **settings)
        with served(create_app(config)) as url:
            yield url, a, b


def predict(url: str, user: str) -> httpx2.Response:
    return httpx2.post(f"{url}/predict", json=ROWS, headers={"X-User-ID": user}, timeout=10)


def test_the_answer_is_the_chosen_models_with_the_variant_added() -> None:
    with proxy() as (url, a, b):
        to_a, to_b = predict(url, A_USER), predict(url, B_USER)

    assert to_a.json()["predictions"][0]["label"] == "from-a"
    assert to_a.json()["variant"] == to_a.headers["x-variant"] == "a"
    assert to_b.json()["predictions"][0]["label"] == "from-b"
    assert to_b.json()["variant"] == "b"
    assert (a.calls, b.calls) == (1, 1)


@pytest.mark.parametrize("share", [12.345, 101, -1, "ten"])
def test_a_share_nginx_could_not_write_is_refused_and_the_split_stays(share: Any) -> None:
    with proxy() as (url, _, _):
        refused = httpx2.put(f"{url}/weights", json={"b_percent": share})
        now = httpx2.get(f"{url}/weights").json()

    assert refused.status_code == 422
    assert "b_percent" in refused.text
    assert now == {"b_percent": 10.0, "a_percent": 90.0}


def test_a_new_share_applies_from_the_next_request() -> None:
    moved = next(f"u{i}" for i in range(999) if assign(f"u{i}", 10) != assign(f"u{i}", 60))
    with proxy() as (url, _, _):
        before = predict(url, moved).json()["variant"]
        changed = httpx2.put(f"{url}/weights", json={"b_percent": 60})
        after = predict(url, moved).json()["variant"]
        metrics = httpx2.get(f"{url}/metrics").text

    assert (before, after) == ("a", "b")
    assert changed.json() == {"b_percent": 60.0, "a_percent": 40.0}
    assert "online_ab_test_b_percent 60.0" in metrics


def test_a_b_that_is_down_fails_its_users_with_a_503_naming_it_and_a_is_not_asked() -> None:
    with proxy(b_down=True) as (url, a, _):
        failed = predict(url, B_USER)

    assert failed.status_code == 503
    assert "model B" in failed.json()["detail"]
    assert a.calls == 0  # no silent retry on A: B's failures stay B's, to be seen


def test_ready_needs_b_only_while_it_has_a_share() -> None:
    with proxy(b_down=True) as (url, _, _):
        with_share = httpx2.get(f"{url}/ready")
        httpx2.put(f"{url}/weights", json={"b_percent": 0})
        rolled_back = httpx2.get(f"{url}/ready")
        served_by_a = predict(url, B_USER)

    assert with_share.status_code == 503
    assert "model B" in with_share.text
    assert rolled_back.status_code == 200
    assert served_by_a.json()["variant"] == "a"


def test_a_body_that_is_not_the_contract_is_refused_before_any_model() -> None:
    with proxy() as (url, a, b):
        refused = httpx2.post(f"{url}/predict", json={"rows": [[1, 2]]})

    assert refused.status_code == 422
    assert (a.calls, b.calls) == (0, 0)
