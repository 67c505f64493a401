"""The batch pattern's tables and the SQL the job runs on them, through SQLAlchemy.

Input table `batch_items` (one row of raw iris measurements per item), inference table
`batch_predictions` (one row per item: done with label and probability, or failed with the
reason), and two log tables: `batch_runs` (one row per run) and `batch_chunks` (one row per
chunk attempt). The same code runs on SQLite and PostgreSQL.

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
from datetime import datetime
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
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

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
    Column("status", String(8), nullable=False),  # done | failed
    Column("error", Text),
)


def connect(url: str) -> Engine:
    """An engine for an SQLite file or a PostgreSQL database (psycopg 3 driver)."""
    url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
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
    metadata.create_all(engine)


@contextlib.contextmanager
def run_lock(engine: Engine) -> Iterator[bool]:
    """Hold the job's lock if no other run holds it; yields whether it was taken.

    PostgreSQL: a session advisory lock. SQLite: an flock on a file next to the database. Both
    go away with the process, so a killed run never leaves the job locked.
    """
    if engine.dialect.name == "postgresql":
        key = 0x6261746368  # "batch"; advisory locks are per database
        with engine.connect() as conn:
            taken = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
            conn.commit()
            try:
                yield taken
            finally:
                if taken:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
        return
    with open(f"{engine.url.database}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the file releases the lock


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


def log_chunk(conn: Connection, run_id: int, attempt: int, chunk: Chunk, **outcome: Any) -> None:
    conn.execute(
        insert(chunks).values(
            run_id=run_id,
            attempt=attempt,
            first_id=chunk.first_id,
            last_id=chunk.last_id,
            rows=chunk.rows,
            **outcome,
        )
    )


def start_run(conn: Connection, started: datetime, retry: str, model_version: str) -> int:
    """Record a new run; a run still marked running died without a word (we hold the lock)."""
    conn.execute(update(runs).where(runs.c.status == "running").values(status="abandoned"))
    run_id = conn.scalar(
        insert(runs)
        .values(started_at=started, status="running", retry=retry, model_version=model_version)
        .returning(runs.c.id)
    )
    conn.commit()
    return int(run_id)


def finish_run(conn: Connection, run_id: int, **summary: Any) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id).values(**summary))
    conn.commit()


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
