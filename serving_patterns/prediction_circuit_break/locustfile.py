"""Load test of the prediction circuit break: clients with a fallback path, under the limit.

    make run PATTERN=circuit-break    # in one terminal
    make load PATTERN=circuit-break   # in another: 32 users for 30 s, report in reports/

Each user asks about 5 times a second at random moments, so 32 users offer about 160
requests/s to a predictor that takes 50 ms a call: about 8 predictions at once against the
limit of 16. A shed answer (503 with the fallback body) is what this pattern promises, not a
failure: it is counted as a success under its own name, so the report shows how many fell back.
Raise the users (`make load ... USERS=200`) to see the shedding take the excess.
"""

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=200, max_error_rate=0.001, min_rps=100))


class Client(FastHttpUser):
    wait_time = poisson_arrivals(5)

    @task
    def predict(self) -> None:
        with self.client.post(
            "/predict", json={"data": [iris_row()]}, catch_response=True
        ) as response:
            if response.status_code == 503 and response.json().get("fallback"):
                response.success()  # the client's fallback path: a default answer, no error
                response.request_meta["name"] = "/predict fallback"
