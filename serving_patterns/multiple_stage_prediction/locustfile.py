"""Load test of the multiple stage prediction pattern: users get the light answer, then poll for
the heavy one.

    make run PATTERN=multi-stage           # in one terminal
    make load PATTERN=multi-stage          # in another: 32 users for 30 s, report in reports/

Each user asks for a prediction (the light answer and a job id), then polls GET /jobs/{id} every
100 ms until the heavy answer is there, and asks again: about two predictions a second per user,
at random moments. The light answer's latency is the POST's; the time from the POST to the heavy
answer is the "heavy answer" entry (a Locust event, not a request), with a bound of its own.
"""

import time

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(
    SLO(
        p99_ms=100,
        max_error_rate=0.001,
        min_rps=100,
        p99_ms_of={"heavy answer": 1000},
    )
)


class Visitor(FastHttpUser):
    wait_time = poisson_arrivals(2)

    @task
    def predict_then_wait_for_the_heavy_answer(self) -> None:
        started = time.perf_counter()
        with self.client.post(
            "/predict", json={"data": [iris_row()]}, catch_response=True
        ) as answer:
            job_id = answer.json().get("job_id") if answer.status_code == 200 else None
            if job_id is None:
                answer.failure(f"answered {answer.status_code}: {answer.text[:200]}")
                return
        deadline = started + 30
        while time.perf_counter() < deadline:
            time.sleep(0.1)
            job = self.client.get(f"/jobs/{job_id}", name="/jobs/[id]").json()
            if job["status"] != "pending":
                self.environment.events.request.fire(
                    request_type="JOB",
                    name="heavy answer" if job["status"] == "done" else "heavy failed",
                    response_time=(time.perf_counter() - started) * 1000,
                    response_length=0,
                    exception=None if job["status"] == "done" else RuntimeError(job["error"]),
                    context={},
                )
                return
