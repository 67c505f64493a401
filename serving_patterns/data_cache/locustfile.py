"""Load test of the data cache: clients asking for predictions on stored records, mostly ones
already asked for, and now and then writing one.

    make run PATTERN=data-cache    # in one terminal
    make load PATTERN=data-cache   # in another: 32 users for 30 s, report in reports/

Each user picks one of the 150 seeded records (the warmer has cached them: hits, each still a
prediction); one request in twenty changes a record, which invalidates it, so the next request
for it reads the database again.
"""

import random

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=150, max_error_rate=0.001, min_rps=140))

SEEDED = 150


def measurements() -> dict[str, int]:
    return {
        "sepal_length_mm": random.randint(43, 79),
        "sepal_width_mm": random.randint(20, 44),
        "petal_length_mm": random.randint(10, 69),
        "petal_width_mm": random.randint(1, 25),
    }


class Client(FastHttpUser):
    # About 5 requests/s each at random moments: latency at a target rate, not a queue's depth.
    wait_time = poisson_arrivals(5)

    @task(19)
    def predict(self) -> None:
        self.client.post("/predict", json={"id": random.randint(1, SEEDED)}, name="/predict")

    @task(1)
    def change(self) -> None:
        record_id = random.randint(1, SEEDED)
        self.client.put(f"/records/{record_id}", json=measurements(), name="/records/{id}")
