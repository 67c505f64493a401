"""Load test of all-in-one: both models through one entry, the monolith's or the proxy's.

    make run PATTERN=all-in-one                                   # in one terminal
    make load PATTERN=all-in-one                                  # the monolith (8140)
    make load PATTERN=all-in-one HOST=http://127.0.0.1:8141       # the split design's proxy

32 users at random moments, about 3 requests/s each, half to model A (one iris row), half to
model B (one 8x8 digit). The designs' difference is in failures, not speed: the figures show
what the proxy's extra hop costs.
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

enforce_slo(SLO(p99_ms=250, max_error_rate=0.001, min_rps=80))


def image() -> list[int]:
    """A random 8x8 grid of intensities 0..16, flattened row by row: model B's input."""
    return [random.randint(0, 16) for _ in range(64)]


class Caller(FastHttpUser):
    wait_time = poisson_arrivals(3)

    @task
    def ask_a(self) -> None:
        self.client.post("/a/predict", json={"data": [iris_row()]})

    @task
    def ask_b(self) -> None:
        self.client.post("/b/predict", json={"data": [image()]})
