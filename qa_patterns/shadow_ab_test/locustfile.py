"""Load test of the shadow A/B test: clients of model A, with model B in the shadow.

    make run PATTERN=shadow     # in one terminal
    make load PATTERN=shadow    # in another: 32 users for 30 s, report in reports/

Each user asks about 5 times a second at random moments, so 32 users offer about 160
requests/s to the proxy, which sends as many copies to B. The SLO is the client's, which B must
not touch: slow B down (`SHADOW_AB_TEST_MODEL_B_DELAY_SECONDS=0.5 make run PATTERN=shadow`) and
the same load should still meet it. Then `python -m qa_patterns.shadow_ab_test.report` compares
what both answered.
"""

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator, both models and the recorder on the same
# machine; see the README.
enforce_slo(SLO(p99_ms=200, max_error_rate=0.001, min_rps=100))


class Client(FastHttpUser):
    wait_time = poisson_arrivals(5)

    @task
    def predict(self) -> None:
        self.client.post("/predict", json={"data": [iris_row()]})
