"""The batch pattern's tables and the SQL the job runs on them, through SQLAlchemy.

Input table `batch_items` (one row of raw iris measurements per item), inference table
`batch_predictions` (one row per item: done with label and probability, or failed with the
reason), `batch_runs` (one row per run) and `batch_chunks` (one row per chunk attempt: the work
queue the job processes of a run claim from, and the log of what each attempt did). The same
code runs on SQLite (one job process at a time) and PostgreSQL (any number share a run).

How processes share a run on PostgreSQL, all in this module:
- joining (`join_run`): under a transaction-level advisory lock, a process joins the open run
  (status running) or, when there is none, plans a new one and queues its chunks; one commit.
- claiming (`claim_chunk`): `SELECT ... FOR UPDATE SKIP LOCKED` on a pending chunk. The row lock
  is the claim: the chunk is read, scored, written and marked done in that same transaction, so
  it commits whole or not at all. A claimer that dies ends its session, PostgreSQL rolls its
  transaction back, and the chunk is pending and unlocked again: the next claim takes it.
- once nothing is left to claim, a process waits on the chunks others hold (the same SELECT
  without SKIP LOCKED), so a chunk whose claimer died is taken again by those still running.

Tables, small writes and the API's queries use SQLAlchemy Core. The two bulk steps of the job,
reading a chunk and writing its predictions, go through the driver's own connection (sqlite3
executemany, psycopg COPY): SQLAlchemy's row objects and parameter handling cost several times
more than the model itself on a million rows.
"""

import contextlib
import fcntl
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

# The model's inputs, in the order it takes them (the job checks them against model.json).
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
MIN_ID, MAX_ID = -(2**63), 2**63 - 1

# SQLite makes an INTEGER primary key the rowid (no second index); PostgreSQL gets BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

items = Table(
    "batch_items",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    *(Column(name, Float) for name in FEATURES),  # nullable: bad input is part of the pattern
)

# No foreign key to batch_items on purpose: the job only writes ids it has just read, and the
# per-row check would cost PostgreSQL a second index lookup on every inserted prediction.
predictions = Table(
    "batch_predictions",
    metadata,
    Column("item_id", Id, primary_key=True, autoincrement=False),
    Column("run_id", Integer, nullable=False),
    Column("status", String(8), nullable=False, server_default="done"),  # done | failed
    Column("label", String(64)),
    Column("probability", Float),
    Column("error", Text),
)

runs = Table(
    "batch_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    # running | done | deadline | stopped | failed | abandoned
    Column("status", String(16), nullable=False),
    Column("retry", String(8), nullable=False),
    Column("model_version", String(64), nullable=False),
    # The planner's settings, which every process that joins the run follows.
    Column("max_attempts", Integer),
    Column("finish_by", DateTime(timezone=True)),
    Column("planned_rows", Integer),
    Column("planned_chunks", Integer),
    Column("scored", Integer),
    Column("failed", Integer),
    Column("unscored", Integer),
    Column("message", Text),
)

chunks = Table(
    "batch_chunks",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("first_id", Id, primary_key=True),
    Column("last_id", Id, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("scored", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("status", String(9), nullable=False),  # pending | done | failed | unstarted
    Column("error", Text),
    Column("claimed_by", String(128)),  # pid@host of the process that ended the attempt
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
)

# Advisory lock keys (two int4: the pattern's, then what it guards). Per database.
BATCH = 0x62617463  # "batc"
PLAN_LOCK = {"kind": BATCH, "what": 0}  # joining, planning and closing a run
DDL_LOCK = {"kind": BATCH, "what": 1}  # creating the tables
MEMBERS = BATCH + 1  # shared by every process in run `what`


def connect(url: str, **connect_args: Any) -> Engine:
    """An engine for an SQLite file or a PostgreSQL database (psycopg 3 driver); connect_args
    go to psycopg (application_name, options)."""
    url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL: the API reads while the job writes; NORMAL sync is durable enough in WAL mode
        # and saves an fsync per chunk.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    return engine


def create_tables(engine: Engine) -> None:
    """Create the tables, and add the columns a table made by an earlier version lacks (all
    nullable). On PostgreSQL under a lock: job processes started together all call this."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:kind, :what)"), DDL_LOCK)
        metadata.create_all(conn)
        present = inspect(conn)
        for table in metadata.sorted_tables:
            have = {column["name"] for column in present.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    ddl = CreateColumn(column).compile(dialect=conn.dialect)
                    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


@contextlib.contextmanager
def sqlite_lock(engine: Engine) -> Iterator[bool]:
    """SQLite: hold the database's job lock (an flock beside the file) if no other process
    holds it; yields whether it was taken. It goes away with the process, so a killed job never
    leaves the database locked. PostgreSQL: always True, its processes share runs instead."""
    if engine.dialect.name == "postgresql":
        yield True
        return
    with open(f"{engine.url.database}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file releases the lock


@contextlib.contextmanager
def runs_held(engine: Engine) -> Iterator[Connection]:
    """Hold the plan lock: job processes wait at their join until this ends (maintenance; tests
    and the benchmark use it to let several processes join one run at the same moment)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:kind, :what)"), PLAN_LOCK)
        conn.commit()
        try:
            yield conn
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:kind, :what)"), PLAN_LOCK)
            conn.commit()


def processes_waiting_to_join(conn: Connection) -> int:
    """How many sessions wait for the plan lock (job processes at their join)."""
    return int(
        conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid = :kind AND objid = :what AND objsubid = 2 "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            PLAN_LOCK,
        )
        or 0
    )


# --- the job's reads -------------------------------------------------------------------------

# A row is pending when no earlier run has scored it: no prediction, a failed one, or one this
# very run wrote (so a retry pass can score it again). The item_id range repeats the outer one so
# that PostgreSQL's anti-join reads only that slice of the predictions index.
_PENDING = """NOT EXISTS (
    SELECT 1 FROM batch_predictions p
    WHERE p.item_id = i.id AND p.item_id BETWEEN :first AND :last
      AND p.status = 'done' AND p.run_id <> :run)"""
_PROBE = text(
    "SELECT i.id FROM batch_items i WHERE i.id BETWEEN :first AND :last AND "
    f"{_PENDING} ORDER BY i.id LIMIT 1 OFFSET :skip"
)
_TAIL = text(
    "SELECT count(*), max(i.id) FROM batch_items i WHERE i.id BETWEEN :first AND :last AND "
    + _PENDING
)
_READ = (
    f"SELECT i.id, {', '.join(f'i.{name}' for name in FEATURES)} FROM batch_items i "
    f"WHERE i.id BETWEEN :first AND :last AND {_PENDING} ORDER BY i.id"
)


@dataclass(frozen=True)
class Chunk:
    """A range of item ids holding `rows` pending rows: the unit of reading, scoring, commit."""

    first_id: int
    last_id: int
    rows: int


def plan_chunks(conn: Connection, run_id: int, size: int) -> list[Chunk]:
    """Split the pending rows into chunks of `size` rows, by id ranges.

    Each boundary is found with an OFFSET probe, so the database counts the rows and none of them
    travels to Python: the plan of a million rows costs about one index scan.
    """
    plan: list[Chunk] = []
    after = MIN_ID
    while True:
        bounds = {"first": after + 1, "last": MAX_ID, "run": run_id}
        first = conn.scalar(_PROBE, {**bounds, "skip": 0})
        if first is None:
            return plan
        last = conn.scalar(_PROBE, {**bounds, "skip": size - 1})
        if last is None:
            count, last = conn.execute(_TAIL, bounds).one()
            plan.append(Chunk(first, last, count))
            return plan
        plan.append(Chunk(first, last, size))
        after = last


def read_chunk(conn: Connection, run_id: int, chunk: Chunk) -> list[tuple[Any, ...]]:
    """The pending rows of a chunk: (id, *FEATURES) tuples, NULLs as None."""
    params = {"first": chunk.first_id, "last": chunk.last_id, "run": run_id}
    raw: Any = conn.connection.driver_connection
    rows: list[tuple[Any, ...]]
    if conn.dialect.name == "postgresql":
        # Binary results: floats arrive as doubles instead of text to parse.
        with raw.cursor(binary=True) as cursor:
            cursor.execute(re.sub(r":(\w+)", r"%(\1)s", _READ), params)
            rows = cursor.fetchall()
    else:
        rows = raw.execute(_READ, params).fetchall()
    return rows


# --- the job's writes ------------------------------------------------------------------------


def replace_predictions(
    conn: Connection,
    run_id: int,
    chunk: Chunk,
    scored: tuple[Sequence[int], Sequence[str], Sequence[float]],
    failed: Iterable[tuple[int, str]],
) -> None:
    """Write a chunk's outcome in place of whatever the pending rows had (failed rows, or this
    run's earlier pass), so a rerun or a retry never duplicates a row. Does not commit."""
    p = predictions.c
    conn.execute(
        delete(predictions).where(
            p.item_id.between(chunk.first_id, chunk.last_id),
            (p.status != "done") | (p.run_id == run_id),
        )
    )
    ids, labels, probabilities = scored
    rows = zip(ids, repeat(run_id), labels, probabilities, strict=False)  # repeat() is endless
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        copy_sql = "COPY batch_predictions (item_id, run_id, label, probability) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
    else:
        raw.executemany(
            "INSERT INTO batch_predictions (item_id, run_id, label, probability) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
    failures = [
        {"item_id": item_id, "run_id": run_id, "status": "failed", "error": reason}
        for item_id, reason in failed
    ]
    if failures:
        conn.execute(insert(predictions), failures)


def discard_run(conn: Connection, run_id: int) -> int:
    """Withdraw every prediction a run wrote (retry-all: its rows stand only together)."""
    return conn.execute(delete(predictions).where(predictions.c.run_id == run_id)).rowcount


# --- the run shared by the job processes -----------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """The run a process works in, with the settings of the process that planned it."""

    id: int
    retry: str
    max_attempts: int
    deadline: datetime | None
    planned_rows: int
    planned_chunks: int


class ChunkTaken(RuntimeError):
    """A chunk attempt was no longer pending when this process ended it: another one did.
    The claim's row lock makes this impossible; the check makes the database refuse a second
    completion instead of storing a chunk twice, were the claiming ever broken."""


def _plan_of(row: Any, max_attempts: int) -> RunPlan:
    deadline = row["finish_by"]
    if deadline is not None and deadline.tzinfo is None:  # SQLite keeps no offset: it is UTC
        deadline = deadline.replace(tzinfo=UTC)
    return RunPlan(
        row["id"], row["retry"], row["max_attempts"] or max_attempts, deadline,
        row["planned_rows"] or 0, row["planned_chunks"] or 0,
    )  # fmt: skip


def join_run(
    conn: Connection,
    *,
    started: datetime,
    retry: str,
    max_attempts: int,
    deadline: datetime | None,
    model_version: str,
    chunk_size: int,
) -> tuple[RunPlan, bool]:
    """Join the open run, or plan a new one when none is open; (the run, whether we planned it).

    One transaction under the plan lock, so of processes starting together exactly one plans and
    the others join what it planned. A run stays open (status running) until a process closes
    it; one whose processes all died is open too, and the next process finishes it.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(text("SELECT pg_advisory_xact_lock(:kind, :what)"), PLAN_LOCK)
    row = (
        conn.execute(select(runs).where(runs.c.status == "running").order_by(runs.c.id.desc()))
        .mappings()
        .first()
    )
    planned = row is None
    if row is None:
        finish_by = deadline.astimezone(UTC) if deadline else None
        run_id = conn.scalar(
            insert(runs)
            .values(started_at=started, status="running", retry=retry, max_attempts=max_attempts,
                    finish_by=finish_by, model_version=model_version)
            .returning(runs.c.id)
        )  # fmt: skip
        plan = plan_chunks(conn, run_id, chunk_size)
        if plan:
            conn.execute(
                insert(chunks),
                [{"run_id": run_id, "attempt": 1, "first_id": c.first_id, "last_id": c.last_id,
                  "rows": c.rows, "scored": 0, "failed": 0, "status": "pending"} for c in plan],
            )  # fmt: skip
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(planned_rows=sum(c.rows for c in plan), planned_chunks=len(plan))
        )
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
    if postgres:  # held by the session until it ends: who is in the run (see leave_run)
        conn.execute(text("SELECT pg_advisory_lock_shared(:kind, :what)"),
                     {"kind": MEMBERS, "what": row["id"]})  # fmt: skip
    conn.commit()
    return _plan_of(row, max_attempts), planned


def claim_chunk(
    conn: Connection, run_id: int, claimer: str, wait: bool = False
) -> tuple[int, Chunk] | None:
    """Claim the run's next pending chunk attempt: (attempt, chunk), or None when none is left.

    Begins the transaction that scores the chunk: the row lock it takes is the claim, held until
    that transaction commits or the session ends. wait=False skips the chunks others hold;
    wait=True waits for them, and returns one whose holder died (PostgreSQL rolled it back).
    Earlier attempts first, then ids: a retry pass comes after the pass before it.
    """
    c = chunks.c
    query = (
        select(c.attempt, c.first_id, c.last_id, c.rows)
        .where(c.run_id == run_id, c.status == "pending")
        .order_by(c.attempt, c.first_id)
        .limit(1)
        .with_for_update(skip_locked=not wait)  # SQLite has no row locks: one process
    )
    # Begun here, not on first use: the chunk's reads and writes use the driver connection,
    # which SQLAlchemy does not see, and a rollback must reach the driver.
    conn.begin()
    row = conn.execute(query).first()
    if row is None:
        conn.commit()
        return None
    attempt, first_id, last_id, rows = row
    if conn.dialect.name == "postgresql":
        # Who holds what, for people and tests: pg_stat_activity shows it while the transaction
        # lasts (is_local: the name goes back when it ends).
        name = f"batch-job {claimer} chunk {run_id}:{attempt}:{first_id}"
        conn.execute(text("SELECT set_config('application_name', :name, true)"),
                     {"name": name[:63]})  # fmt: skip
    return attempt, Chunk(first_id, last_id, rows)


def end_chunk(conn: Connection, run_id: int, attempt: int, chunk: Chunk, **outcome: Any) -> None:
    """Record how a claimed chunk attempt ended (status done, failed or unstarted, with counts,
    error, claimed_by and times), in the claim's transaction. Does not commit."""
    c = chunks.c
    ended = conn.execute(
        update(chunks)
        .where(c.run_id == run_id, c.attempt == attempt, c.first_id == chunk.first_id,
               c.status == "pending")
        .values(**outcome)
    ).rowcount  # fmt: skip
    if ended != 1:
        raise ChunkTaken(f"run {run_id} chunk {chunk.first_id} pass {attempt} is not pending")


def add_attempt(conn: Connection, run_id: int, attempt: int, first_id: int | None) -> int:
    """Queue pass `attempt` of one chunk (first_id) or of every chunk of the run (None), once
    however many processes ask for it. Does not commit; returns how many were queued."""
    one = "" if first_id is None else " AND first_id = :first"
    queued: int = conn.execute(
        text(
            "INSERT INTO batch_chunks (run_id, attempt, first_id, last_id, rows, scored, failed, "
            "status) SELECT run_id, :attempt, first_id, last_id, rows, 0, 0, 'pending' "
            f"FROM batch_chunks WHERE run_id = :run AND attempt = 1{one} ORDER BY first_id "
            "ON CONFLICT DO NOTHING"
        ),
        {"run": run_id, "attempt": attempt, "first": first_id},
    ).rowcount
    return queued


def leave_run(conn: Connection, run_id: int) -> bool:
    """Leave the run before its end (a stop signal); whether this was its last process.

    When it was, the caller closes the run in this transaction, which holds the plan lock so
    that nobody joins meanwhile. SQLite: always the last, it has one process.
    """
    if conn.dialect.name != "postgresql":
        return True
    key = {"kind": MEMBERS, "what": run_id}
    conn.execute(text("SELECT pg_advisory_xact_lock(:kind, :what)"), PLAN_LOCK)
    conn.execute(text("SELECT pg_advisory_unlock_shared(:kind, :what)"), key)
    alone = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:kind, :what)"), key))
    if alone:
        conn.execute(text("SELECT pg_advisory_unlock(:kind, :what)"), key)
    return alone


def pending_chunks(conn: Connection, run_id: int) -> int:
    """How many chunk attempts of the run are pending (claimed by a transaction or not)."""
    c = chunks.c
    query = select(func.count()).where(c.run_id == run_id, c.status == "pending")
    count = int(conn.scalar(query) or 0)
    conn.commit()
    return count


def leave_pending(conn: Connection, run_id: int) -> None:
    """Mark every chunk attempt still pending as unstarted (no other process is in the run)."""
    c = chunks.c
    conn.execute(
        update(chunks).where(c.run_id == run_id, c.status == "pending").values(status="unstarted")
    )


@dataclass(frozen=True)
class ChunkOutcome:
    first_id: int
    rows: int
    state: str  # done | failed | unstarted
    scored: int
    failed: int


def chunk_outcomes(conn: Connection, run_id: int) -> tuple[list[ChunkOutcome], int]:
    """Each chunk's outcome (its latest attempt that ran, else unstarted), and the passes made."""
    c = chunks.c
    found = conn.execute(
        select(c.first_id, c.attempt, c.rows, c.status, c.scored, c.failed)
        .where(c.run_id == run_id)
        .order_by(c.first_id, c.attempt)
    ).all()
    latest: dict[int, ChunkOutcome] = {}
    attempts = 1
    for first_id, attempt, rows, status, scored, failed in found:
        if status in ("done", "failed"):
            latest[first_id] = ChunkOutcome(first_id, rows, status, scored, failed)
            attempts = max(attempts, attempt)
        else:
            latest.setdefault(first_id, ChunkOutcome(first_id, rows, "unstarted", 0, 0))
    return list(latest.values()), attempts


def close_run(conn: Connection, run_id: int, **summary: Any) -> bool:
    """Record a run's end, if no other process has; whether this call did. Does not commit."""
    closed = conn.execute(
        update(runs).where(runs.c.id == run_id, runs.c.status == "running").values(**summary)
    )
    return bool(closed.rowcount == 1)


# --- the input side --------------------------------------------------------------------------


def add_items(engine: Engine, rows: Sequence[Sequence[float | None]]) -> int:
    """Append rows of FEATURES to the input table with the next ids; returns the first id."""
    with engine.connect() as conn:
        first = int(conn.scalar(select(func.coalesce(func.max(items.c.id), 0))) or 0) + 1
        numbered = ((first + i, *row) for i, row in enumerate(rows))
        raw: Any = conn.connection.driver_connection
        if conn.dialect.name == "postgresql":
            copy_sql = f"COPY batch_items (id, {', '.join(FEATURES)}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for row in numbered:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * (len(FEATURES) + 1))
            raw.executemany(f"INSERT INTO batch_items VALUES ({marks})", numbered)
        conn.commit()
    return first
