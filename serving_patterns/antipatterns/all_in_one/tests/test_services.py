"""In-process tests of the two designs' servers: the same API on the same paths."""

from functools import partial

import httpx2
from fastapi.testclient import TestClient
from pydantic import HttpUrl

from serving_patterns.antipatterns.all_in_one.models import create_a, create_b
from serving_patterns.antipatterns.all_in_one.monolith import create_app as create_monolith
from serving_patterns.antipatterns.all_in_one.proxy import SEVEN
from serving_patterns.antipatterns.all_in_one.proxy import create_app as create_proxy
from serving_patterns.antipatterns.all_in_one.settings import ProxySettings
from shared.testing import served, wait_until

SETOSA = [5.1, 3.5, 1.4, 0.2]


def check_both_models(post: object) -> None:
    """A's and B's answers on /a/predict and /b/predict, and B's own 422 to an iris row."""
    assert callable(post)
    iris, digits, wrong = (
        post("/a/predict", [SETOSA]),
        post("/b/predict", [SEVEN]),
        post("/b/predict", [SETOSA]),
    )
    assert iris.status_code == 200
    assert iris.json()["predictions"][0]["label"] == "setosa"
    assert digits.status_code == 200
    assert digits.json()["predictions"][0]["label"] == "7"
    assert wrong.status_code == 422  # the model's own check, in either design
    assert "expected 64 features" in wrong.text


def ready(base: str) -> bool:
    return httpx2.get(f"{base}/ready").status_code == 200


def test_the_monolith_serves_both_models_on_their_paths() -> None:
    with TestClient(create_monolith()) as client:
        wait_until(
            lambda: all(client.get(f"/{m}/ready").status_code == 200 for m in "ab"),
            what="both models loaded",
        )
        check_both_models(lambda path, rows: client.post(path, json={"data": rows}))


def test_the_proxy_serves_the_same_paths_from_one_service_per_model() -> None:
    with served(create_a()) as a, served(create_b()) as b:
        proxy = create_proxy(ProxySettings(a_url=HttpUrl(a), b_url=HttpUrl(b)))
        with served(proxy) as split:
            for base in (a, b, split):
                wait_until(partial(ready, base), what=f"{base} ready")
            check_both_models(lambda path, rows: httpx2.post(f"{split}{path}", json={"data": rows}))
