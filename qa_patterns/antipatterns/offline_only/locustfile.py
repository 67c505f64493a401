"""Load test of the offline only pattern: the simulated users of population.py, under load.

    make run PATTERN=offline-only     # in one terminal
    make load PATTERN=offline-only    # in another: 32 users for 30 s, report in reports/

B's share is 0 until a release gives it one (`release ab`: 10 %; `release offline-only`: 100 %).
Each Locust user is a stream of visitors (ids from a pool of 2,000, sent as X-User-ID) asking
about 5 times a second at random moments; a visitor converts by population.py's rule (a sure,
right answer) and the conversion goes to POST /events with the prediction's request id. Locust
names each answer by its variant, so the split shows in its table.
"""

import random
import uuid

from locust import FastHttpUser, task

from qa_patterns.antipatterns.offline_only.population import converts
from qa_patterns.online_ab_test.simulate import flower
from qa_patterns.online_ab_test.split import USER_HEADER
from shared.loadtest import SLO, enforce_slo, poisson_arrivals

# online_ab_test's SLO: the same proxy and model servers (see the README).
enforce_slo(SLO(p99_ms=200, max_error_rate=0.001, min_rps=100))

VISITORS = [f"visitor-{i}" for i in range(2000)]


class Visitors(FastHttpUser):
    wait_time = poisson_arrivals(5)

    @task
    def visit(self) -> None:
        rng, request_id = random.Random(), uuid.uuid4().hex
        row, user_id = flower(rng), rng.choice(VISITORS)
        headers = {USER_HEADER: user_id, "X-Request-ID": request_id}
        with self.client.post(
            "/predict", json={"data": [row]}, headers=headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                return  # counted as a failure by Locust
            answer = response.json()
            response.request_meta["name"] = f"/predict {answer['variant']}"
        if converts(row, answer["predictions"][0], rng.random()):
            event = {"request_id": request_id, "user_id": user_id, "event": "conversion"}
            self.client.post("/events", json=event)
