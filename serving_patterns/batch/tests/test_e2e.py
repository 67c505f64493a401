"""End to end: the pattern started from its compose file through local mode, on SQLite and on
PostgreSQL: seed, one job run, the scheduler and the read API as real processes."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from serving_patterns.batch import storage
from serving_patterns.batch.seed import demo_rows
from shared.testing import REPO_ROOT, LocalPattern, pattern_running, wait_until

PATTERN = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


@contextmanager
def batch_running(
    backend: str, folder: Path, **variables: str
) -> Iterator[tuple[LocalPattern, str]]:
    """The pattern on a database of its own; yields it and the database URL."""
    variables["BATCH_SCHEDULER_HEARTBEAT_FILE"] = str(folder / "heartbeat")
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'batch.db'}"
        with pattern_running(PATTERN, BATCH_DATABASE_URL=url, **variables) as pattern:
            yield pattern, url
        return
    # pattern_running gives the compose service `postgres` a new database: the job's URL.
    with pattern_running(PATTERN, **variables) as pattern:
        yield pattern, pattern.variables["DATABASE_URL"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_make_run_seeds_and_the_job_fills_every_row_then_exits(
    backend: str, tmp_path: Path
) -> None:
    with batch_running(backend, tmp_path, BATCH_SCHEDULER_SCHEDULE="0 0 1 1 *") as (pattern, _):
        api = pattern.url("api")
        job = pattern.processes["job"][0]
        job.popen.wait(timeout=60)  # nothing waits for the one-shot job: the test does
        summary = httpx2.get(f"{api}/data/summary").json()
        unpredicted = httpx2.get(f"{api}/data/unpredicted").json()
        failed = httpx2.get(f"{api}/data/failed").json()["rows"]
        # A second run by hand, as `docker compose run job` does: same command, same environment.
        rerun = subprocess.run(
            pattern.services["job"].command, env=job.env, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        after = httpx2.get(f"{api}/data/summary").json()
        runs = httpx2.get(f"{api}/runs").json()

    # The job is a process that ran to its end: no port, no healthcheck, exit code 0.
    assert job.popen.returncode == 0
    assert pattern.services["job"].ports == {} and pattern.services["job"].healthcheck == []
    assert summary == {"items": 10_000, "predicted": 9_996, "failed": 4, "unpredicted": 0}
    assert unpredicted == {"rows": [], "next_after": None}
    assert [row["id"] for row in failed] == [2_500, 5_000, 7_500, 10_000]
    assert all("NULL" in row["error"] or "not finite" in row["error"] for row in failed)
    assert rerun.returncode == 0, rerun.stdout
    assert "run 2 done: 0 rows scored, 4 rows failed" in rerun.stdout
    assert after == summary
    assert [(r["id"], r["planned_rows"], r["scored"]) for r in runs] == [
        (2, 4, 0),
        (1, 10_000, 9_996),
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_scheduler_runs_the_job_on_its_cron_schedule(backend: str, tmp_path: Path) -> None:
    every_2s = "* * * * * */2"
    with batch_running(backend, tmp_path, BATCH_SCHEDULER_SCHEDULE=every_2s) as (pattern, url):
        api = pattern.url("api")
        # The demo rows first (by the one-shot job or a scheduled run, whichever takes the lock),
        # so that the rows added below are all a later scheduled run has to score.
        pattern.processes["job"][0].popen.wait(timeout=60)
        wait_until(
            lambda: httpx2.get(f"{api}/data/summary").json()["unpredicted"] == 0,
            timeout=30,
            what="the demo rows to be scored",
        )
        engine = storage.connect(url)
        storage.add_items(engine, demo_rows(10_001, 25, bad_every=0))
        engine.dispose()
        summary = wait_until(
            lambda: (
                (s := httpx2.get(f"{api}/data/summary").json())["unpredicted"] == 0
                and s["items"] == 10_025
                and s
            ),
            timeout=30,
            what="the scheduled run to score the new rows",
        )
        # The run that scored them is a process that ends: the scheduler sees it exit.
        logs = wait_until(
            lambda: (
                text
                if (text := pattern.logs("scheduler")).rfind("job exited with code 0")
                > text.find("done: 25 rows scored")
                >= 0
                else None
            ),
            timeout=30,
            what="the scheduled job to exit",
        )

    assert summary["predicted"] == 10_021
    assert "starting the job: " in logs
