"""Load test of the microservice horizontal pattern: each request fans out to every model.

    make run PATTERN=horizontal          # in one terminal
    make load PATTERN=horizontal         # in another: 32 users for 30 s, report in reports/

A request crosses the proxy and all three model servers at once. Rows are drawn over the iris
ranges, so the models disagree now and then and the mean probability has work to do.
"""

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator and all four services on the same machine; see the
# README. Three model calls a request, so the bounds are looser than the synchronous pattern's.
enforce_slo(SLO(p99_ms=250, max_error_rate=0.001, min_rps=80))


class Botanist(FastHttpUser):
    # Paced users (about 3 requests/s each, 96 req/s for 32, at random moments): the SLO is
    # about latency at a target rate, not the depth of the queue flat-out users would build.
    wait_time = poisson_arrivals(3)

    @task(9)
    def identify_one(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})

    @task(1)
    def identify_ten(self) -> None:
        self.client.post("/predict", json={"data": [iris_row() for _ in range(10)]})
