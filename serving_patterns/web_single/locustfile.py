"""Load test of web single: one-row and ten-row predictions against one service.

make run PATTERN=web-single          # in one terminal
make load PATTERN=web-single         # in another: 32 users for 30 s, report in reports/
"""

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=50, max_error_rate=0.001, min_rps=200))


class Client(FastHttpUser):
    @task(9)
    def predict_one(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})

    @task(1)
    def predict_ten(self) -> None:
        self.client.post("/predict", json={"data": [iris_row() for _ in range(10)]})
