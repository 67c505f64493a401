"""End to end: the models, the recorder and a proxy started from compose.yaml through local mode,
over HTTP. Every behaviour test runs against both proxies, proxy.py and nginx (compose's `nginx`
profile, run with the machine's nginx and the pattern's template). The model servers' own
request counters (their GET /metrics) say how many requests reached each; the inferences table
says what each answered."""

import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from shared.inference_log import InferenceRecord, connect_database, read_inferences
from shared.testing import LocalPattern, nginx_binary, pattern_running, requests_counted, wait_until

PATTERN = Path(__file__).resolve().parents[1]
PROXIES = ["proxy", "nginx"]
NGINX_PORT = 8080  # the nginx service's client port (its other one is the relay's)

pytestmark = pytest.mark.e2e


@dataclass
class Shadowed:
    """A running pattern, seen through one of its proxies."""

    pattern: LocalPattern
    proxy: str
    off_file: Path

    @property
    def url(self) -> str:
        if self.proxy == "nginx":
            return self.pattern.url("nginx", NGINX_PORT)
        return self.pattern.url("proxy")

    def calls(self, model: str, status: str | None = None) -> float:
        """POST /predict requests `model` has answered (with `status`): its own count."""
        metrics = httpx2.get(f"{self.pattern.url(model)}/metrics").text
        labels = {"status": status} if status else {}
        return requests_counted(metrics, route="/predict", method="POST", **labels)

    def set_shadow(self, enabled: bool) -> None:
        """B in or out of the shadow, each proxy its own way, while it runs."""
        if self.proxy == "nginx":  # the switch file its template looks for on each request
            if enabled:
                self.off_file.unlink(missing_ok=True)
            else:
                self.off_file.touch()
        else:
            response = httpx2.put(f"{self.url}/shadow", json={"enabled": enabled})
            assert response.status_code == 200, response.text
            assert response.json()["enabled"] is enabled

    def restart_b(self, **environment: str) -> None:
        """Model B stopped and started again with `environment` over compose's (or left down)."""
        self.pattern.kill("model-b", len(self.pattern.processes["model-b"]) - 1)
        if environment.pop("down", None) is None:
            self.pattern.start_replica("model-b", **environment)
            self.pattern.wait_healthy("model-b", len(self.pattern.processes["model-b"]) - 1)

    def proxy_pid(self) -> int:
        """The proxy's process (nginx's master): the same one throughout means no restart."""
        if self.proxy == "nginx":
            process = self.pattern.servers["nginx"].process
            assert process is not None
            return process.pid
        return self.pattern.processes["proxy"][-1].pid

    def database(self) -> Engine:
        url = self.pattern.service_url("postgres").replace("postgresql://", "postgresql+psycopg://")
        return connect_database(url)


@contextmanager
def running(proxy: str, tmp_path: Path, **variables: str) -> Iterator[Shadowed]:
    if proxy == "nginx" and nginx_binary() is None:
        pytest.skip("no nginx on this machine (Debian: apt-get install nginx-light)")
    # Not in tmp_path: pytest's folders are its user's alone, and nginx's workers (another user
    # when the master runs as root) must see the file to take B out.
    switch = Path(tempfile.mkdtemp(prefix="shadow-switch-"))
    switch.chmod(0o755)
    off_file = switch / "off"
    settings = {
        "SHADOW_AB_TEST_NGINX_SHADOW_OFF_FILE": str(off_file),
        **({"COMPOSE_PROFILES": "nginx"} if proxy == "nginx" else {}),
        **variables,
    }
    try:
        with pattern_running(PATTERN, **settings) as pattern:
            yield Shadowed(pattern, proxy, off_file)
    finally:
        shutil.rmtree(switch, ignore_errors=True)


def iris_rows(n: int, seed: int) -> list[list[float]]:
    """Rows across the whole iris range, so that A and B disagree on some of them."""
    rng = random.Random(seed)
    return [
        [
            round(rng.uniform(4.3, 7.9), 1),
            round(rng.uniform(2.0, 4.4), 1),
            round(rng.uniform(1.0, 6.9), 1),
            round(rng.uniform(0.1, 2.5), 1),
        ]
        for _ in range(n)
    ]


def send(client: httpx2.Client, url: str, rows: list[list[float]], prefix: str) -> list[Any]:
    """One request per row, one after the other on one keep-alive connection: the answers."""
    answers = []
    for i, row in enumerate(rows):
        response = client.post(
            f"{url}/predict", json={"data": [row]}, headers={"X-Request-ID": f"{prefix}-{i}"}
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def timed(client: httpx2.Client, url: str, rows: list[list[float]], prefix: str) -> list[float]:
    took = []
    for i, row in enumerate(rows):
        started = time.perf_counter()
        response = client.post(
            f"{url}/predict", json={"data": [row]}, headers={"X-Request-ID": f"{prefix}-{i}"}
        )
        took.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return took


def model_a_answers(s: Shadowed, rows: list[list[float]]) -> list[Any]:
    """What model A itself answers to each row."""
    with httpx2.Client(timeout=10) as client:
        return [
            client.post(f"{s.pattern.url('model-a')}/predict", json={"data": [row]}).json()
            for row in rows
        ]


@pytest.mark.parametrize("proxy", PROXIES)
def test_the_client_gets_a_answers_and_b_a_copy_of_every_request_both_recorded_under_its_id(
    proxy: str, tmp_path: Path
) -> None:
    rows = iris_rows(30, seed=1)
    with running(proxy, tmp_path) as s:
        with httpx2.Client(timeout=10) as client:
            answers = send(client, s.url, rows, "shadowed")
        wait_until(lambda: s.calls("model-b") == len(rows), what="B's copies counted")
        a_calls, b_calls = s.calls("model-a"), s.calls("model-b")
        direct = model_a_answers(s, rows)
        engine = s.database()
        try:
            wanted = [f"shadowed-{i}" for i in range(len(rows))]

            def recorded() -> list[InferenceRecord] | None:
                found = read_inferences(engine, request_ids=wanted)
                return found if len(found) == 2 * len(rows) else None

            records = wait_until(recorded, what="both variants' records of every request")
        finally:
            engine.dispose()

    # The client's answer is A's, request by request.
    assert [a["predictions"] for a in answers] == [d["predictions"] for d in direct]
    assert {a["model_version"] for a in answers} == {direct[0]["model_version"]}
    assert [a["request_id"] for a in answers] == wanted
    # B got a copy of every request, and no more.
    assert a_calls == b_calls == len(rows)
    # Both answers are recorded under the request's id.
    by_id: dict[str, dict[str, InferenceRecord]] = {}
    for record in records:
        by_id.setdefault(record.request_id, {})[record.variant] = record
    assert set(by_id) == set(wanted)
    for request_id, answer in zip(wanted, answers, strict=True):
        a, b = by_id[request_id]["a"], by_id[request_id]["b"]
        assert [p.model_dump() for p in a.predictions] == answer["predictions"]
        assert a.rows == b.rows == [rows[wanted.index(request_id)]]
        assert a.latency_ms > 0 and b.latency_ms > 0
    labels_a = [by_id[i]["a"].predictions[0].label for i in wanted]
    labels_b = [by_id[i]["b"].predictions[0].label for i in wanted]
    assert labels_a != labels_b  # two models, and rows where they disagree: B is really B


@pytest.mark.parametrize("proxy", PROXIES)
def test_b_slow_failing_or_down_changes_neither_the_answers_nor_the_latency(
    proxy: str, tmp_path: Path
) -> None:
    rows = iris_rows(25, seed=2)
    b_delay = 2.0  # beyond B's 1 s timeout: every copy is let go of
    medians: dict[str, float] = {}
    slowest: dict[str, float] = {}
    with running(proxy, tmp_path) as s, httpx2.Client(timeout=10) as client:
        expected = [a["predictions"] for a in model_a_answers(s, rows)]
        send(client, s.url, rows[:5], "warm-up")
        wait_until(lambda: s.calls("model-b") == 5, what="B's copies of the warm-up counted")

        def measure(case: str) -> None:
            took = timed(client, s.url, rows, case)
            medians[case], slowest[case] = statistics.median(took), max(took)
            answers = send(client, s.url, rows, f"{case}-answers")
            assert [a["predictions"] for a in answers] == expected, case

        s.set_shadow(False)
        measure("absent")
        absent_copies = s.calls("model-b") - 5
        s.set_shadow(True)
        measure("healthy")
        s.restart_b(SHADOW_AB_TEST_MODEL_B_DELAY_SECONDS=str(b_delay))
        measure("slow")
        s.restart_b(SHADOW_AB_TEST_MODEL_B_FAIL_PERCENT="100")
        measure("failing")
        failed = s.calls("model-b", "500")
        s.restart_b(down="yes")
        measure("down")

    assert absent_copies == 0  # B absent: out of the shadow, it got nothing
    assert failed == 2 * len(rows)  # the failing B got every copy, and failed every one
    for case in ("healthy", "slow", "failing", "down"):
        # Generous and relative (a loaded machine): well within B's delay and its timeout.
        assert medians[case] < 2 * medians["absent"] + 0.025, (case, medians)
        assert slowest[case] < b_delay / 4, (case, slowest)


def test_a_mirror_straight_to_b_holds_the_clients_connection_while_b_works(
    tmp_path: Path,
) -> None:
    """nginx's mirror as the documentation shows it (no relay): the answer leaves when A gives
    it, but the client's next request on the connection waits until B has answered."""
    b_delay = 1.0
    variables = {
        "SHADOW_AB_TEST_MODEL_B_DELAY_SECONDS": str(b_delay),
        "SHADOW_AB_TEST_NGINX_B_TIMEOUT_SECONDS": "5",
    }
    took: dict[str, list[float]] = {}
    for mirror in ("direct", "relay"):
        with running("nginx", tmp_path, SHADOW_AB_TEST_NGINX_MIRROR=mirror, **variables) as s:
            with httpx2.Client(timeout=10) as client:
                took[mirror] = timed(client, s.url, iris_rows(4, seed=3), mirror)

    # The first request of the connection is answered at once; each next one waited for B.
    assert took["direct"][0] < b_delay / 2, took
    assert all(t >= b_delay * 0.9 for t in took["direct"][1:]), took
    # Through the relay, none waits for B.
    assert all(t < b_delay / 4 for t in took["relay"]), took


@pytest.mark.parametrize("proxy", PROXIES)
def test_b_is_taken_out_of_the_shadow_and_put_back_without_a_restart(
    proxy: str, tmp_path: Path
) -> None:
    rows = iris_rows(10, seed=4)
    with running(proxy, tmp_path) as s, httpx2.Client(timeout=10) as client:
        pid = s.proxy_pid()
        send(client, s.url, rows, "before")
        wait_until(lambda: s.calls("model-b") == 10, what="B's copies counted")

        s.set_shadow(False)
        send(client, s.url, rows, "out")
        a_out, b_out = s.calls("model-a"), s.calls("model-b")

        s.set_shadow(True)
        send(client, s.url, rows, "back")
        wait_until(lambda: s.calls("model-b") == 20, what="B's copies counted again")
        a_back = s.calls("model-a")
        same_process = s.proxy_pid() == pid

    assert (a_out, b_out) == (20, 10)  # out of the shadow: A answered, B got nothing
    assert a_back == 30
    assert same_process
