"""Several job processes sharing one run on PostgreSQL: three replicas of the compose file's job
service, started through local mode (BATCH_JOB_REPLICAS=3, what `docker compose up --scale
job=3` gives), as real processes on a database of their own.

Each test holds the plan lock (storage.runs_held) until the three processes all wait at their
join, so that they claim chunks at the same moment: otherwise the first could score the whole
table while the others are still importing numpy, and nothing would be shared.
"""

import re
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from functools import partial
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from serving_patterns.batch import storage
from serving_patterns.batch.tests.test_e2e import PATTERN
from shared.testing import LocalPattern, pattern_running, wait_until

pytestmark = pytest.mark.e2e

ROWS, CHUNK, JOBS = 60_000, 1_000, 3
CLAIM = re.compile(r"batch-job (\d+)@\S+ chunk (\d+):(\d+):(-?\d+)")


@pytest.fixture
def three_jobs(tmp_path: Path, postgres_url: str) -> Iterator[tuple[LocalPattern, Engine, str]]:
    """The pattern with three job replicas over ROWS seeded rows, the jobs let go together once
    all three wait at their join; yields it, an engine on its database and that database's URL."""
    url = postgres_url
    with ExitStack() as stack:
        engine = storage.connect(url)
        stack.callback(engine.dispose)
        storage.create_tables(engine)
        gate = ExitStack()
        held = gate.enter_context(storage.runs_held(engine))
        stack.callback(gate.close)
        pattern = stack.enter_context(
            pattern_running(
                PATTERN, DATABASE_URL=url, BATCH_JOB_REPLICAS=str(JOBS),
                BATCH_SEED_ROWS=str(ROWS), BATCH_SEED_BAD_EVERY="0",
                BATCH_JOB_CHUNK_SIZE=str(CHUNK), BATCH_SCHEDULER_SCHEDULE="0 0 1 1 *",
                BATCH_SCHEDULER_HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
            )
        )  # fmt: skip
        wait_until(
            lambda: storage.processes_waiting_to_join(held) == JOBS,
            timeout=60,
            what="the three job processes to wait at their join",
        )
        gate.close()  # let them go: one plans the run, the other two join it
        yield pattern, engine, url


def job_exits(pattern: LocalPattern) -> list[int | None]:
    return [p.popen.wait(timeout=60) for p in pattern.processes["job"]]


def claimer(pattern: LocalPattern, index: int) -> str:
    return f"{pattern.processes['job'][index].pid}@"


def assert_every_row_scored_exactly_once(
    engine: Engine,
) -> list[tuple[int, str, datetime, datetime]]:
    """Every input row has one prediction, and was scored by exactly one completed chunk
    attempt; the chunk log (first_id, claimed_by, started_at, finished_at) of the run."""
    p, c = storage.predictions.c, storage.chunks.c
    with engine.connect() as conn:
        rows, distinct, done = conn.execute(
            select(func.count(), func.count(p.item_id.distinct()),
                   func.count().filter(p.status == "done"))
        ).one()  # fmt: skip
        joined = storage.items.outerjoin(storage.predictions, p.item_id == storage.items.c.id)
        missing = conn.scalar(select(func.count()).select_from(joined).where(p.item_id.is_(None)))
        log = conn.execute(
            select(c.first_id, c.attempt, c.status, c.scored, c.claimed_by, c.started_at,
                   c.finished_at).order_by(c.first_id)
        ).all()  # fmt: skip
        run = conn.execute(select(storage.runs)).mappings().one()
    assert (rows, distinct, done, missing) == (ROWS, ROWS, ROWS, 0)
    # One attempt per chunk, done: no chunk failed, none was scored twice.
    assert [(attempt, status) for _, attempt, status, *_ in log] == [(1, "done")] * (ROWS // CHUNK)
    assert sum(scored for _, _, _, scored, *_ in log) == ROWS
    assert (run["status"], run["scored"], run["unscored"]) == ("done", ROWS, 0)
    assert run["message"] == f"{ROWS} rows scored, 0 rows failed"
    return [(first, by, began, ended) for first, _, _, _, by, began, ended in log]


def overlapping(log: list[tuple[int, str, datetime, datetime]]) -> int:
    """How many chunks were being scored while another process scored another chunk."""
    return sum(
        any(b != by and b0 < end and start < b1 for _, b, b0, b1 in log)
        for _, by, start, end in log
    )


def test_three_jobs_share_a_run_and_score_every_row_exactly_once(
    three_jobs: tuple[LocalPattern, Engine, str],
) -> None:
    pattern, engine, _ = three_jobs

    exits = job_exits(pattern)

    log = assert_every_row_scored_exactly_once(engine)
    assert exits == [0, 0, 0]
    claimers = {by for _, by, _, _ in log}
    assert {name.split("@")[0] for name in claimers} == {
        str(p.pid) for p in pattern.processes["job"]
    }  # each of the three scored chunks
    # Chunks scored at the same time by different processes: claims skip the chunks others
    # hold (without SKIP LOCKED each claim would wait for the one before, one chunk at a time).
    assert overlapping(log) >= 2
    logs = pattern.logs("job")
    assert logs.count("run 1: 60000 rows to score in 60 chunks") == 1  # one planned the run,
    assert logs.count("run 1: joined, 60000 rows to score in 60 chunks") == 2  # two joined it


def test_a_job_killed_mid_chunk_loses_nothing_the_others_score_its_chunk(
    three_jobs: tuple[LocalPattern, Engine, str],
) -> None:
    pattern, engine, url = three_jobs
    pids = {p.pid: index for index, p in enumerate(pattern.processes["job"])}
    watch = psycopg.connect(url, autocommit=True)  # each query sees the sessions as they are

    def claims() -> dict[int, tuple[int, int, int]]:
        """pid -> (run, attempt, first id) of each job process holding a chunk right now."""
        # This test's database only: other tests' job processes share the server.
        names = watch.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        found = (CLAIM.fullmatch(name) for (name,) in names)
        return {int(m[1]): (int(m[2]), int(m[3]), int(m[4])) for m in found if m}

    def frozen_holding_a_chunk() -> tuple[int, tuple[int, int, int]] | None:
        """Stop a process seen holding a chunk; it, if it still holds one once stopped."""
        for pid in claims():
            process = pattern.processes["job"][pids[pid]]
            process.signal(signal.SIGSTOP)
            held = claims().get(pid)
            if held:
                return pid, held
            process.signal(signal.SIGCONT)  # it committed between the two looks: another go
        return None

    def survivors_waiting(victim: int, held: tuple[int, int, int]) -> str | None:
        """'waiting' once the other processes all wait on a lock (the chunk the victim holds);
        'released' if the victim's claim ended after all (see below)."""
        if claims().get(victim) != held:
            return "released"
        waiting = (
            # Any of its sessions (it holds more than one: the run's, a chunk's claim).
            watch.execute(
                "SELECT bool_or(wait_event_type = 'Lock') FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE %s",
                (f"batch-job {pid}@%",),
            ).fetchone()
            == (True,)
            for pid in pids
            if pid != victim
        )
        return "waiting" if all(waiting) else None

    try:
        while True:
            victim, held = wait_until(
                frozen_holding_a_chunk, timeout=60, what="a job process holding a chunk"
            )
            # The others score everything else, then wait on the chunk the frozen one holds.
            seen = wait_until(
                partial(survivors_waiting, victim, held),
                timeout=60,
                what="the other two processes to wait for the held chunk",
            )
            if seen == "waiting":
                break
            # Its COMMIT was already on its way to the server when it stopped: the server ended
            # the claim after all. Let it go on and stop another one.
            pattern.processes["job"][pids[victim]].signal(signal.SIGCONT)
        run_id, attempt, first_id = held
        survivors = [pid for pid in pids if pid != victim]
        pattern.kill("job", pids[victim], signal.SIGKILL)  # dies holding its claim
        exits = job_exits(pattern)
    finally:
        watch.close()

    log = assert_every_row_scored_exactly_once(engine)
    assert exits[pids[victim]] == -signal.SIGKILL
    assert [exits[pids[pid]] for pid in survivors] == [0, 0]
    assert (run_id, attempt) == (1, 1)
    taken_again = [by for first, by, _, _ in log if first == first_id]
    assert len(taken_again) == 1 and taken_again[0].split("@")[0] in map(str, survivors)
    assert all(not by.startswith(f"{victim}@") or first != first_id for first, by, _, _ in log)
