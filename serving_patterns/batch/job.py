"""The batch job: score every input row that lacks a prediction, chunk by chunk, then exit.

    python -m serving_patterns.batch.job     # what the scheduler or `docker compose run job` runs

One run: take the job lock (a second run at the same time exits at once), plan the pending rows
as chunks of BATCH_CHUNK_SIZE rows, and for each chunk read it, score it with one model call,
write its predictions and commit. A row with a NULL or non-finite value is recorded as failed
with the reason and the run goes on. A chunk that raises (the model, the database) is handled by
BATCH_RETRY: score every chunk again (all), only the failed chunks (failed), or leave them to the
next run (none). With BATCH_FINISH_BY set, chunks not started by then are left for the next run.
The process holds the model only while it runs: the pattern has no resident server.
"""

import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    """What a run did; the same figures go to batch_runs and to the log."""

    run_id: int | None
    status: str  # done | deadline | stopped | failed | skipped
    planned_rows: int = 0
    planned_chunks: int = 0
    scored: int = 0  # rows with a prediction
    failed: int = 0  # rows recorded as failed (bad input)
    unscored: int = 0  # rows left without a record: failed or unstarted chunks
    attempts: int = 0
    message: str = ""
    chunk_status: dict[int, str] = field(default_factory=dict, repr=False)


def utcnow() -> datetime:
    return datetime.now(UTC)


def run(
    settings: JobSettings,
    model: Model | None = None,
    now: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None,
) -> RunReport:
    """One run of the job. `model`, `now` and `stop` are there for tests and the benchmark."""
    engine = storage.connect(settings.database_url)
    try:
        storage.create_tables(engine)
        with storage.run_lock(engine) as locked:
            if not locked:
                report = RunReport(None, "skipped", message="another run holds the lock")
                logger.info("nothing to do: %s", report.message)
                return report
            model = model or Predictor(settings.model_dir)
            if tuple(model.card.feature_names) != FEATURES:
                raise ValueError(f"model takes {model.card.feature_names}, table has {FEATURES}")
            with engine.connect() as conn:
                return _run(conn, settings, model, now, stop or threading.Event())
    finally:
        engine.dispose()


def _run(
    conn: Connection,
    settings: JobSettings,
    model: Model,
    now: Callable[[], datetime],
    stop: threading.Event,
) -> RunReport:
    started = now()
    deadline = settings.deadline(started)
    run_id = storage.start_run(conn, started, settings.retry, model.card.version)
    plan = storage.plan_chunks(conn, run_id, settings.chunk_size)
    conn.commit()  # the plan is read; from here each chunk is a transaction of its own
    report = RunReport(run_id, "done", sum(c.rows for c in plan), len(plan))
    logger.info(
        "run %d: %d rows to score in %d chunk%s (retry=%s, deadline %s)", run_id,
        report.planned_rows, len(plan), "" if len(plan) == 1 else "s", settings.retry,
        deadline or "none",
    )  # fmt: skip
    outcomes: dict[int, tuple[int, int]] = {}  # chunk index -> (scored, failed) of its last pass
    status = dict.fromkeys(range(len(plan)), "unstarted")
    todo = list(range(len(plan)))
    for attempt in range(1, settings.max_attempts + 1):
        report.attempts = attempt
        for index in todo:
            if stop.is_set() or (deadline is not None and now() >= deadline):
                report.status = "stopped" if stop.is_set() else "deadline"
                break
            chunk = plan[index]
            try:
                outcomes[index] = _score_chunk(conn, model, run_id, attempt, chunk)
                status[index] = "done"
            # Whatever a chunk raises (model, driver, data) stays in that chunk: it is rolled back,
            # logged with its reason, and the retry setting decides what happens next.
            except Exception as exc:
                conn.rollback()
                status[index] = "failed"
                outcomes.pop(index, None)
                logger.warning("chunk ids %d..%d failed: %r", chunk.first_id, chunk.last_id, exc)
                storage.log_chunk(conn, run_id, attempt, chunk, scored=0, failed=0,
                                  status="failed", error=repr(exc)[:1000])  # fmt: skip
                conn.commit()
        failed = [index for index, state in status.items() if state == "failed"]
        if not failed or report.status != "done" or settings.retry == "none":
            break
        if attempt < settings.max_attempts:
            todo = list(range(len(plan))) if settings.retry == "all" else failed
            logger.info("pass %d: %d chunks again (%s)", attempt + 1, len(todo), settings.retry)

    if settings.retry == "all" and "failed" in status.values():
        # The rows of a retry-all run stand only together: withdraw them for the next run.
        withdrawn = storage.discard_run(conn, run_id)
        conn.commit()
        outcomes.clear()
        status = dict.fromkeys(status, "failed")
        logger.warning("run %d: withdrew its %d predictions, chunks still fail", run_id, withdrawn)

    report.chunk_status = status
    report.scored = sum(scored for scored, _ in outcomes.values())
    report.failed = sum(failed for _, failed in outcomes.values())
    report.unscored = sum(plan[i].rows for i, state in status.items() if state != "done")
    report.message = _summary(report, plan, status)
    if "failed" in status.values():
        report.status = "failed"
    storage.finish_run(
        conn, run_id, finished_at=now(), status=report.status, planned_rows=report.planned_rows,
        planned_chunks=report.planned_chunks, scored=report.scored, failed=report.failed,
        unscored=report.unscored, message=report.message,
    )  # fmt: skip
    log = logger.warning if report.status == "failed" else logger.info
    log("run %d %s: %s", run_id, report.status, report.message)
    return report


def _summary(report: RunReport, plan: list[Chunk], status: dict[int, str]) -> str:
    text = f"{report.scored} rows scored, {report.failed} rows failed"
    cut = {"deadline": " by the deadline", "stopped": " (stop signal)"}.get(report.status, "")
    why = {"failed": "failed", "unstarted": f"not started{cut}"}
    left = []
    for state, words in why.items():
        indexes = [i for i, s in status.items() if s == state]
        if indexes:
            rows = sum(plan[i].rows for i in indexes)
            left.append(f"{len(indexes)} of {len(plan)} chunks ({rows} rows) {words}")
    return text + ("; " + " and ".join(left) + ", left for the next run" if left else "")


def _score_chunk(
    conn: Connection, model: Model, run_id: int, attempt: int, chunk: Chunk
) -> tuple[int, int]:
    """Read, score and write one chunk in one transaction; (rows scored, rows failed)."""
    # Begun here, not on first use: read_chunk uses the driver connection, which SQLAlchemy does
    # not see, and the rollback after a failure must reach the driver (on PostgreSQL a failed
    # statement aborts the transaction: every later one would fail until it is rolled back).
    conn.begin()
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
    storage.log_chunk(conn, run_id, attempt, chunk, scored=len(best), failed=len(reasons),
                      status="done", error=None)  # fmt: skip
    conn.commit()
    logger.info(
        "chunk ids %d..%d: %d scored, %d failed (pass %d)",
        chunk.first_id, chunk.last_id, len(best), len(reasons), attempt,
    )  # fmt: skip
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
    summary = {k: v for k, v in asdict(report).items() if k != "chunk_status"}
    logger.info("run report", extra={"report": summary})
    return 1 if report.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
