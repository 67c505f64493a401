"""Load test of the prediction cache: shoppers who mostly ask what others have asked before.

    make run PATTERN=prediction-cache    # in one terminal
    make load PATTERN=prediction-cache   # in another: 32 users for 30 s, report in reports/

Eight requests in ten pick one of 50 popular flowers (hits once each has been asked), two in
ten a new random one (misses), so the run shows the cache's mix rather than a best case.
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=100, max_error_rate=0.001, min_rps=140))

POPULAR = [iris_row() for _ in range(50)]


class Shopper(FastHttpUser):
    # About 5 requests/s each at random moments: latency at a target rate, not a queue's depth.
    wait_time = poisson_arrivals(5)

    @task(8)
    def popular(self) -> None:
        self.client.post(
            "/predict", json={"data": [random.choice(POPULAR)]}, name="/predict popular"
        )

    @task(2)
    def new(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]}, name="/predict new")
