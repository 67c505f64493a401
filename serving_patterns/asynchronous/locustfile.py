"""Load test of the asynchronous pattern: users submit one-row jobs and poll them until done.

    make run PATTERN=async           # in one terminal
    make load PATTERN=async          # in another: 32 users for 30 s, report in reports/

Each user submits a job, then polls GET /jobs/{id} every 50 ms until it is done, and submits
the next, five jobs a second at most (32 users: a target of 160 jobs/s): the SLO is about latency
at a target rate, not about how deep a queue flat-out users can build in front of a saturated
CPU. The response times are those of the submits and polls; the time from submit to result is
the "job done" entry (a Locust event, not an HTTP request), with a bound of its own: it includes
up to one polling interval, so it is no request's latency.
"""

import time

from locust import FastHttpUser, task

from shared.loadtest import SLO, enforce_slo, iris_row, poisson_arrivals

# Measured on 2 cores with the load generator on the same machine; see the README.
enforce_slo(SLO(p99_ms=100, max_error_rate=0.001, min_rps=200, p99_ms_of={"job done": 300}))


class Submitter(FastHttpUser):
    wait_time = poisson_arrivals(5)

    @task
    def submit_and_wait(self) -> None:
        started = time.perf_counter()
        with self.client.post(
            "/predict", json={"data": [iris_row()]}, catch_response=True
        ) as answer:
            if answer.status_code != 202:
                answer.failure(f"submit answered {answer.status_code}")
                return
            job_id = answer.json()["job_id"]
        deadline = started + 30
        while time.perf_counter() < deadline:
            job = self.client.get(f"/jobs/{job_id}", name="/jobs/[id]").json()
            if job["status"] != "pending":
                self.environment.events.request.fire(
                    request_type="JOB",
                    name="job done" if job["status"] == "done" else "job failed",
                    response_time=(time.perf_counter() - started) * 1000,
                    response_length=0,
                    exception=None if job["status"] == "done" else RuntimeError(job["error"]),
                    context={},
                )
                return
            time.sleep(0.05)
