"""Load test of the microservice vertical pattern: each request runs the chain, stage by stage.

    make run PATTERN=vertical            # in one terminal
    make load PATTERN=vertical           # in another: 32 users for 30 s, report in reports/

A one-image request crosses three services (proxy, coarse, one specialist); a ten-image one
usually four, both specialists one after the other. Images are random 8x8 grids, so both halves
of the chain carry load.
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, poisson_arrivals

# Measured on 2 cores with the load generator and all four services on the same machine; see the
# README. Three hops a request, so the bounds are looser than the synchronous pattern's.
enforce_slo(SLO(p99_ms=150, max_error_rate=0.001, min_rps=80))


def image() -> list[int]:
    """A random 8x8 grid of intensities 0..16, flattened row by row: the chain's raw input."""
    return [random.randint(0, 16) for _ in range(64)]


class Reader(FastHttpUser):
    # Paced users (about 3 requests/s each, 96 req/s for 32, at random moments): the SLO is
    # about latency at a target rate, not the depth of the queue flat-out users would build.
    wait_time = poisson_arrivals(3)

    @task(9)
    def read_one(self) -> None:
        self.client.post("/predict", json={"data": [image()]})

    @task(1)
    def read_ten(self) -> None:
        self.client.post("/predict", json={"data": [image() for _ in range(10)]})
