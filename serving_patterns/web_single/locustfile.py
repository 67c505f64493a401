"""Load test of web single: one-row and ten-row predictions against one service.

make run PATTERN=web-single          # in one terminal
make load PATTERN=web-single         # in another: 32 users for 30 s, report in reports/
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=50, max_error_rate=0.001, min_rps=200))


def iris_row() -> list[float]:
    return [
        round(random.uniform(4.3, 7.9), 1),
        round(random.uniform(2.0, 4.4), 1),
        round(random.uniform(1.0, 6.9), 1),
        round(random.uniform(0.1, 2.5), 1),
    ]


class Client(FastHttpUser):
    @task(9)
    def predict_one(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})

    @task(1)
    def predict_ten(self) -> None:
        self.client.post("/predict", json={"data": [iris_row() for _ in range(10)]})
