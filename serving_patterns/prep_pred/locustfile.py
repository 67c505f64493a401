"""Load test of prep-pred: raw images to prep, which preprocesses and calls pred.

make run PATTERN=prep-pred           # in one terminal
make load PATTERN=prep-pred          # in another: 32 users for 30 s, report in reports/
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo

# Measured on 2 cores with the load generator and both services on the same machine; see the
# README. Every request crosses two services, so the bounds are looser than web single's.
enforce_slo(SLO(p99_ms=300, max_error_rate=0.001, min_rps=200))


def image() -> list[list[int]]:
    """A random 8x8 grid of intensities 0..16: the raw input, as a scanner would send it."""
    return [[random.randint(0, 16) for _ in range(8)] for _ in range(8)]


class Client(FastHttpUser):
    @task(9)
    def predict_one(self) -> None:
        self.client.post("/predict", json={"data": [image()]})

    @task(1)
    def predict_ten(self) -> None:
        self.client.post("/predict", json={"data": [image() for _ in range(10)]})
