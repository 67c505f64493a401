"""Load test of the synchronous pattern: users of the web app, each waiting on the predictor.

    make run PATTERN=sync                # in one terminal
    make load PATTERN=sync               # in another: 32 users for 30 s, report in reports/

Every request crosses two services (web app -> predictor), so the SLO is looser than web
single's. Rows are drawn over the iris ranges, so all four follow-ups (and the unsure branch)
show up in the mix.
"""

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=100, max_error_rate=0.001, min_rps=140))


class Shopper(FastHttpUser):
    # A paced user (about 5 requests/s each, 160 req/s for 32, at random moments): the SLO is
    # about latency at a target rate, not about how deep a queue flat-out users can build in
    # front of a saturated CPU.
    wait_time = poisson_arrivals(5)

    @task(9)
    def identify_one(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})

    @task(1)
    def identify_ten(self) -> None:
        self.client.post("/predict", json={"data": [iris_row() for _ in range(10)]})
