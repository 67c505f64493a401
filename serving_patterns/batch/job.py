"""The batch job: score every input row that lacks a prediction, chunk by chunk, then exit.

    python -m serving_patterns.batch.job     # what the scheduler or `docker compose run job` runs

One run: join the open run or, if none is open, plan the pending rows as chunks of
BATCH_JOB_CHUNK_SIZE rows (storage.join_run); then claim chunks one at a time until none is left,
and for each read it, score it with one model call, write its predictions and mark it done in
one transaction. On PostgreSQL any number of job processes share a run this way (each claim is
a row lock taken with FOR UPDATE SKIP LOCKED; a claimer that dies gives its chunk back); on
SQLite one process runs at a time and a second one exits. A row with a NULL or non-finite
value is recorded as failed with the reason and the run goes on. A chunk that raises (the
model, the database) is handled by BATCH_JOB_RETRY: score every chunk again (all), only the failed
chunk (failed), or leave it to the next run (none). With BATCH_JOB_FINISH_BY set, chunks not
started by then are left for the next run. The last process out closes the run with its
report. The process holds the model only while it runs: the pattern has no resident server.
"""

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import numpy as np
from sqlalchemy.engine import Connection

from serving_patterns.batch import storage
from serving_patterns.batch.settings import JobSettings
from serving_patterns.batch.storage import FEATURES, Chunk
from shared.logs import configure_logging
from shared.model import ModelCard, Predictor

logger = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32


class Model(Protocol):
    """What the job needs of a model (shared.model.Predictor has it)."""

    card: ModelCard

    def predict_proba(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass
class RunReport:
    """What a run did; the same figures go to batch_runs and to the log. A process that joined
    a run reports the whole run's figures, whichever process scored which chunk."""

    run_id: int | None
    status: str  # done | deadline | stopped | failed | skipped
    planned_rows: int = 0
    planned_chunks: int = 0
    scored: int = 0  # rows with a prediction
    failed: int = 0  # rows recorded as failed (bad input)
    unscored: int = 0  # rows left without a record: failed or unstarted chunks
    attempts: int = 0
    message: str = ""


def utcnow() -> datetime:
    return datetime.now(UTC)


def claimer_name() -> str:
    """This process, as batch_chunks.claimed_by and pg_stat_activity show it: pid@host."""
    return f"{os.getpid()}@{socket.gethostname()}"


def run(
    settings: JobSettings,
    model: Model | None = None,
    now: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None,
) -> RunReport:
    """One run of the job. `model`, `now` and `stop` are there for tests and the benchmark."""
    engine = storage.connect(
        settings.database_url,
        application_name=f"batch-job {claimer_name()}"[:63],
        # A claimer that hangs inside its chunk's transaction, or whose machine vanished, loses
        # its session (and so its claim) after these; one that dies loses it at once.
        options=f"-c idle_in_transaction_session_timeout={int(settings.claim_timeout * 1000)} "
        "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
    )
    try:
        storage.create_tables(engine)
        with storage.sqlite_lock(engine) as taken:
            if not taken:
                report = RunReport(None, "skipped", message=SQLITE_BUSY)
                logger.info("nothing to do: %s", report.message)
                return report
            model = model or Predictor(settings.model_dir)
            if tuple(model.card.feature_names) != FEATURES:
                raise ValueError(f"model takes {model.card.feature_names}, table has {FEATURES}")
            with engine.connect() as conn:
                return _run(conn, settings, model, now, stop or threading.Event())
    finally:
        engine.dispose()


SQLITE_BUSY = (
    "another job process holds this SQLite database's lock; SQLite runs one job process at a "
    "time (on PostgreSQL, job processes share a run)"
)


def _run(
    conn: Connection,
    settings: JobSettings,
    model: Model,
    now: Callable[[], datetime],
    stop: threading.Event,
) -> RunReport:
    started = now()
    claimer = claimer_name()
    plan, planned = storage.join_run(
        conn, started=started, retry=settings.retry, max_attempts=settings.max_attempts,
        deadline=settings.deadline(started), model_version=model.card.version,
        chunk_size=settings.chunk_size,
    )  # fmt: skip
    chunks = plan.planned_chunks
    logger.info(
        "run %d: %s%d rows to score in %d chunk%s (retry=%s, deadline %s)", plan.id,
        "" if planned else "joined, ", plan.planned_rows, chunks, "" if chunks == 1 else "s",
        plan.retry, plan.deadline or "none",
    )  # fmt: skip
    past_deadline = False
    while not stop.is_set():
        if not past_deadline and plan.deadline is not None and now() >= plan.deadline:
            past_deadline = True
            logger.info("run %d: past the deadline, starting no more chunks", plan.id)
        # First a chunk nobody holds; when none is left, wait for those others hold: each ends
        # done (nothing to do) or back in the queue because its claimer died (ours to score).
        claimed = storage.claim_chunk(conn, plan.id, claimer) or storage.claim_chunk(
            conn, plan.id, claimer, wait=True
        )
        if claimed is None:
            # A chunk failed in a process we waited for may have queued a retry pass since our
            # claim's snapshot: the run ends when a fresh look finds nothing pending.
            if storage.pending_chunks(conn, plan.id):
                continue
            break
        attempt, chunk = claimed
        try:
            if past_deadline:
                storage.end_chunk(conn, plan.id, attempt, chunk, status="unstarted")
            else:
                _attempt_chunk(conn, model, plan, attempt, chunk, claimer)
            conn.commit()
        except storage.ChunkTaken as exc:  # see ChunkTaken: the claiming is broken
            conn.rollback()
            logger.error("%s: rolled back", exc)

    if stop.is_set() and not storage.leave_run(conn, plan.id):
        conn.commit()
        report = RunReport(plan.id, "stopped", plan.planned_rows, plan.planned_chunks)
        report.message = f"stop signal: left run {plan.id} to the other processes in it"
        logger.info("run %d stopped here: %s", plan.id, report.message)
        return report
    if stop.is_set():
        storage.leave_pending(conn, plan.id)  # we were the last process: nobody will score them
    return _close(conn, plan, "stopped" if stop.is_set() else "deadline", now)


def _attempt_chunk(
    conn: Connection, model: Model, plan: storage.RunPlan, attempt: int, chunk: Chunk,
    claimer: str,
) -> None:  # fmt: skip
    """Score a claimed chunk, or record its failure and queue its retry; does not commit."""
    began = utcnow()
    try:
        # A savepoint: a failure undoes the chunk's writes but keeps the claim (the row lock),
        # so that its failure is recorded by the process that tried it, and nobody else's.
        with conn.begin_nested():
            scored, failed = _score_chunk(conn, model, plan.id, attempt, chunk)
            storage.end_chunk(
                conn, plan.id, attempt, chunk, status="done", scored=scored, failed=failed,
                claimed_by=claimer, started_at=began, finished_at=utcnow(),
            )  # fmt: skip
    except storage.ChunkTaken:
        raise
    # Whatever a chunk raises (model, driver, data) stays in that chunk: it is rolled back,
    # logged with its reason, and the retry setting decides what happens next.
    except Exception as exc:
        logger.warning("chunk ids %d..%d failed: %r", chunk.first_id, chunk.last_id, exc)
        storage.end_chunk(
            conn, plan.id, attempt, chunk, status="failed", error=repr(exc)[:1000],
            claimed_by=claimer, started_at=began, finished_at=utcnow(),
        )  # fmt: skip
        if plan.retry != "none" and attempt < plan.max_attempts:
            # all: every chunk of the run once more (queued once, whoever fails first).
            which = None if plan.retry == "all" else chunk.first_id
            if storage.add_attempt(conn, plan.id, attempt + 1, which):
                logger.info("pass %d queued (%s)", attempt + 1, plan.retry)
        return
    logger.info(
        "chunk ids %d..%d: %d scored, %d failed (pass %d)",
        chunk.first_id, chunk.last_id, scored, failed, attempt,
    )  # fmt: skip


def _close(
    conn: Connection, plan: storage.RunPlan, reason: str, now: Callable[[], datetime]
) -> RunReport:
    """Close the run once no chunk is left (or this last process stops): its report, from the
    chunk log, the same whichever of its processes closes it."""
    outcomes, attempts = storage.chunk_outcomes(conn, plan.id)
    failed_chunks = any(o.state == "failed" for o in outcomes)
    withdraw = plan.retry == "all" and failed_chunks
    if withdraw:  # the rows of a retry-all run stand only together
        outcomes = [storage.ChunkOutcome(o.first_id, o.rows, "failed", 0, 0) for o in outcomes]
    report = RunReport(plan.id, "done", plan.planned_rows, plan.planned_chunks, attempts=attempts)
    report.scored = sum(o.scored for o in outcomes if o.state == "done")
    report.failed = sum(o.failed for o in outcomes if o.state == "done")
    report.unscored = sum(o.rows for o in outcomes if o.state != "done")
    if failed_chunks:
        report.status = "failed"
    elif any(o.state == "unstarted" for o in outcomes):
        report.status = reason
    report.message = _summary(report, outcomes)
    closed = storage.close_run(
        conn, plan.id, finished_at=now(), status=report.status, scored=report.scored,
        failed=report.failed, unscored=report.unscored, message=report.message,
    )  # fmt: skip
    if closed and withdraw:
        withdrawn = storage.discard_run(conn, plan.id)
        logger.warning("run %d: withdrew its %d predictions, chunks still fail", plan.id, withdrawn)
    conn.commit()
    log = logger.warning if report.status == "failed" else logger.info
    log("run %d %s: %s", plan.id, report.status, report.message)
    return report


def _summary(report: RunReport, outcomes: list[storage.ChunkOutcome]) -> str:
    text = f"{report.scored} rows scored, {report.failed} rows failed"
    cut = {"deadline": " by the deadline", "stopped": " (stop signal)"}.get(report.status, "")
    why = {"failed": "failed", "unstarted": f"not started{cut}"}
    left = []
    for state, words in why.items():
        these = [o for o in outcomes if o.state == state]
        if these:
            rows = sum(o.rows for o in these)
            left.append(f"{len(these)} of {len(outcomes)} chunks ({rows} rows) {words}")
    return text + ("; " + " and ".join(left) + ", left for the next run" if left else "")


def _score_chunk(
    conn: Connection, model: Model, run_id: int, attempt: int, chunk: Chunk
) -> tuple[int, int]:
    """Read, score and write one chunk, in the caller's transaction; (rows scored, failed)."""
    rows = storage.read_chunk(conn, run_id, chunk)
    ids, x, reasons = to_features(rows)
    ok = np.ones(len(ids), dtype=bool)
    ok[list(reasons)] = False
    proba = model.predict_proba(x[ok]) if ok.any() else np.empty((0, len(model.card.labels)))
    # A finite input should give finite probabilities; if not, the row is failed, not stored.
    sane = np.isfinite(proba).all(axis=1)
    for index in np.flatnonzero(ok)[~sane]:
        reasons[int(index)] = "the model returned non-finite probabilities"
    proba, scored_ids = proba[sane], ids[ok][sane]
    best = proba.argmax(axis=1)
    labels = np.asarray(model.card.labels, dtype=object)[best]
    storage.replace_predictions(
        conn,
        run_id,
        chunk,
        (scored_ids.tolist(), labels.tolist(), proba[np.arange(len(best)), best].tolist()),
        ((int(ids[i]), reason) for i, reason in sorted(reasons.items())),
    )
    return len(best), len(reasons)


def to_features(rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Ids, the float32 matrix the model takes, and why each unscorable row is unscorable."""
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURES) + 1)[:, 1:]
    except (TypeError, ValueError):  # a NULL (None) or, in SQLite, a value that is no number
        values = np.array([[_number(v) for v in row[1:]] for row in rows], dtype=np.float64)
        values = values.reshape(len(rows), len(FEATURES))
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, caught just below
        x = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    return ids, x, {int(i): _reason(rows[i][1:]) for i in bad}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _reason(values: tuple[Any, ...]) -> str:
    problems = []
    for name, value in zip(FEATURES, values, strict=True):
        if value is None:
            problems.append(f"{name} is NULL")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{name} is not a number: {value!r}")
        elif not np.isfinite(value):
            problems.append(f"{name} is not finite: {value}")
        elif abs(value) > FLOAT32_MAX:
            problems.append(f"{name} is out of the model's range: {value}")
    return "; ".join(problems)


def main() -> int:
    settings = JobSettings()
    configure_logging("batch-job", settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the current chunk, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        report = run(settings, stop=stop)
    except Exception:
        logger.exception("the run stopped on an error")
        return 1
    logger.info("run report", extra={"report": asdict(report)})
    return 1 if report.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
