"""Load test of the loading test's target, web single's service: inputs of 1, 10 and 100 rows,
and oversize ones that must come back as their 4xx, never a 5xx, while the load runs.

make run PATTERN=loading_test                                  # in one terminal
make load PATTERN=loading_test                                 # 32 users for 30 s on `single`
make load PATTERN=loading_test HOST=http://127.0.0.1:8231      # the same on `multi`
make load PATTERN=loading_test STEPS=4,8,16,32 DURATION=10s    # a step load, and its chart

LOADING_TEST_LOCUST_USER=http swaps FastHttpUser (geventhttpclient) for HttpUser (requests),
which costs the load generator several times the CPU per request: see kit.py's `generator`.
"""

import json
import os

from locust import FastHttpUser, HttpUser, TaskSet, task

from shared.loadtest import SLO, enforce_slo, iris_row

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=200, max_error_rate=0.001, min_rps=100))

HEADERS = {"Content-Type": "application/json"}
# Past the target's bounds (compose: MAX_ROWS 100, MAX_BODY_BYTES 1,000,000): built once, since
# making a 1 MB body for every request would load the generator, not the target.
TOO_MANY_ROWS = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * 1000}).encode()
TOO_BIG_BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]] * 50_000}).encode()  # 1.1 MB


class Inputs(TaskSet):
    """A mix of sizes, as production's would be: mostly one row, some batches, a few abuses."""

    def predict(self, rows: int) -> None:
        body = json.dumps({"data": [iris_row() for _ in range(rows)]})
        self.client.post(
            "/predict", data=body, headers=HEADERS, name=f"/predict {rows} row{'s' * (rows > 1)}"
        )

    def rejected(self, body: bytes, status: int, name: str) -> None:
        with self.client.post(
            "/predict", data=body, headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code == status:
                response.success()  # the server refused it, as it should, and is still up
            else:
                response.failure(f"expected {status}, got {response.status_code}")

    @task(10)
    def one_row(self) -> None:
        self.predict(1)

    @task(5)
    def ten_rows(self) -> None:
        self.predict(10)

    @task(2)
    def hundred_rows(self) -> None:
        self.predict(100)

    @task(1)
    def too_many_rows(self) -> None:
        self.rejected(TOO_MANY_ROWS, 422, "/predict 1000 rows (422)")

    @task(1)
    def too_big_body(self) -> None:
        self.rejected(TOO_BIG_BODY, 413, "/predict 1.1 MB body (413)")


class OneSize(TaskSet):
    """Every request the same body of LOADING_TEST_LOCUST_ROWS rows, made once: the generator
    only sends it, so the target's CPU, not Locust's, sets the pace (kit.py's worker runs)."""

    body = json.dumps({"data": [iris_row() for _ in range(int(os.environ.get(
        "LOADING_TEST_LOCUST_ROWS", "100")))]})  # fmt: skip

    @task
    def predict(self) -> None:
        self.client.post("/predict", data=self.body, headers=HEADERS, name="/predict one size")


CLIENT = os.environ.get("LOADING_TEST_LOCUST_USER", "fast")
ONE_SIZE = bool(os.environ.get("LOADING_TEST_LOCUST_ROWS"))


class Client(FastHttpUser):
    abstract = CLIENT != "fast"
    tasks = [OneSize] if ONE_SIZE else [Inputs]


class RequestsClient(HttpUser):
    abstract = CLIENT != "http"
    tasks = [OneSize] if ONE_SIZE else [Inputs]
