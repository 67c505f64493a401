"""Load test of the online A/B test: users who are shown a prediction and sometimes convert.

    make run PATTERN=online-ab-test    # in one terminal
    make load PATTERN=online-ab-test   # in another: 32 users for 30 s, report in reports/

Each Locust user is a stream of site visitors (ids from a pool of 2000, sent as X-User-ID: a
visitor who comes back sees the same model), asking about 5 times a second at random moments:
32 users offer about 160 predictions/s, 90 % to A, 10 % to B. A visitor converts as
simulate.py's users do (more often after a right prediction), and the conversion goes to POST
/events with the prediction's request id. Then `python -m qa_patterns.online_ab_test.report`
computes each variant's conversion rate and the significance of the difference.
"""

import random
import uuid

from locust import FastHttpUser, task

from qa_patterns.online_ab_test.simulate import converts, flower
from shared.loadtest import SLO, enforce_slo, poisson_arrivals

# Measured on 2 cores with the load generator, both models, the recorder and PostgreSQL on the
# same machine; see the README.
enforce_slo(SLO(p99_ms=200, max_error_rate=0.001, min_rps=100))

VISITORS = [f"visitor-{i}" for i in range(2000)]


class Visitors(FastHttpUser):
    wait_time = poisson_arrivals(5)

    @task
    def visit(self) -> None:
        row, user_id, request_id = (
            flower(random.Random()),
            random.choice(VISITORS),
            uuid.uuid4().hex,
        )
        headers = {"X-User-ID": user_id, "X-Request-ID": request_id}
        with self.client.post(
            "/predict", json={"data": [row]}, headers=headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                return  # counted as a failure by Locust
            label = response.json()["predictions"][0]["label"]
            response.request_meta["name"] = f"/predict {response.json()['variant']}"
        if converts(row, label, random.random()):
            event = {"request_id": request_id, "user_id": user_id, "event": "conversion"}
            self.client.post("/events", json=event)
