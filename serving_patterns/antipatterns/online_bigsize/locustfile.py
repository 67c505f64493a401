"""Load test of online bigsize: the SLO gate that the small model passes and the big one fails.

    make run PATTERN=online-bigsize                                   # in one terminal
    make load PATTERN=online-bigsize                                  # the small model (8130)
    make load PATTERN=online-bigsize HOST=http://127.0.0.1:8131       # the big one

32 users, each sending a request about every 1.6 s at random moments: 20 requests/s in all,
each one an 8x8 image of a digit (64 intensities 0..16). The SLO is the
acceptance criterion the antipattern lacks: a model that cannot answer 20 digits a second within
300 ms at the 99th percentile does not go into the real-time path, however accurate.
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, poisson_arrivals

USERS = 32  # make load's default
TARGET_RPS = 20
# min_rps below the target: Poisson arrivals over a short run wander by a few requests/s.
enforce_slo(SLO(p99_ms=300, max_error_rate=0.001, min_rps=15))


def image() -> list[int]:
    """A random 8x8 grid of intensities 0..16, flattened row by row: what both models read (the
    big one's cost does not depend on what the image shows)."""
    return [random.randint(0, 16) for _ in range(64)]


class FormReader(FastHttpUser):
    wait_time = poisson_arrivals(TARGET_RPS / USERS)

    @task
    def read_a_digit(self) -> None:
        self.client.post("/predict", json={"data": [image()]})
