"""Load test of a service generated from the serving template: any one of the fleet.

    make run PATTERN=serving-template    # in one terminal
    make load PATTERN=serving-template   # in another: 32 users for 30 s against iris
    make load PATTERN=serving-template HOST=http://127.0.0.1:8121   # the digits service

The rows come from the service's own GET /metadata (its model card's sample), read once before
the users start, so the one locustfile loads every service of the fleet, whatever its model's
features: the contract is what they share.
"""

import json
import urllib.request
from typing import Any

from locust import FastHttpUser, events, task

from shared.loadtest import SLO, enforce_slo, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=100, max_error_rate=0.001, min_rps=140))

SAMPLE: list[list[float]] = []


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def read_sample(environment: Any, **_: Any) -> None:
    with urllib.request.urlopen(f"{environment.host}/metadata", timeout=10) as answer:
        SAMPLE[:] = json.load(answer)["sample_input"]["data"][:1]


class Client(FastHttpUser):
    # About 5 requests/s each at random moments: latency at a target rate, not a queue's depth.
    wait_time = poisson_arrivals(5)

    @task(9)
    def predict_one(self) -> None:
        self.client.post("/predict", json={"data": SAMPLE})

    @task(1)
    def predict_ten(self) -> None:
        self.client.post("/predict", json={"data": SAMPLE * 10})
