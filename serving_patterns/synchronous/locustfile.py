"""Load test of the synchronous pattern: users of the web app, each waiting on the predictor.

    make run PATTERN=sync                # in one terminal
    make load PATTERN=sync               # in another: 32 users for 30 s, report in reports/

Every request crosses two services (web app -> predictor), so the SLO is looser than web
single's. Rows are drawn over the iris ranges, so all four follow-ups (and the unsure branch)
show up in the mix.
"""

import random

from locust import FastHttpUser, constant_throughput, task

from shared.loadtest import SLO, enforce_slo

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=100, max_error_rate=0.001, min_rps=150))


def iris_row() -> list[float]:
    return [
        round(random.uniform(4.3, 7.9), 1),
        round(random.uniform(2.0, 4.4), 1),
        round(random.uniform(1.0, 6.9), 1),
        round(random.uniform(0.1, 2.5), 1),
    ]


class Shopper(FastHttpUser):
    # A paced user (5 requests/s each, 160 req/s for 32): the SLO is about latency at a target
    # rate, not about how deep a queue flat-out users can build in front of a saturated CPU.
    wait_time = constant_throughput(5)

    @task(9)
    def identify_one(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})

    @task(1)
    def identify_ten(self) -> None:
        self.client.post("/predict", json={"data": [iris_row() for _ in range(10)]})
