"""The data cache pattern's data store: the records table, through SQLAlchemy, on SQLite or
PostgreSQL.

A record is raw iris measurements in millimetres, as the data warehouse keeps them; the model
wants centimetres in its own feature order (preprocessing.py). Every write gives the record a new
`revision` from one counter row, taken inside the writing transaction:

- the cache compares revisions, so a reader that fetched a record just before it changed cannot
  put the old values back after the change invalidated them (cache.py);
- the counter row stays locked until the writer commits, so revisions become visible in the
  order they were given: the warmer, which reads "every record past revision N", never steps
  over a record whose transaction committed late. The price: writes take turns, one commit at
  a time (enough for a table fed by a data pipeline, not for thousands of writes a second).

The functions are synchronous (psycopg or sqlite3 underneath); the async services run them in a
thread with asyncio.to_thread. SQLAlchemy's asyncio layer would need greenlet and an async
SQLite driver, neither of them in the pinned set.
"""

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, Strict
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, RowMapping, make_url

# The model's inputs in its order; the table keeps each in millimetres.
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
COLUMNS = tuple(f"{name}_mm" for name in FEATURES)
MAX_ID = 2**63 - 1

# SQLite makes an INTEGER primary key the rowid, and only that autoincrements; PostgreSQL: BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

records = Table(
    "data_cache_records",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    *(Column(name, Float, nullable=False) for name in COLUMNS),
    Column("revision", BigInteger, nullable=False, index=True),  # the warmer reads by it
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row: the last revision given. Its row lock orders the writers (see the module docstring).
revisions = Table(
    "data_cache_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last", BigInteger, nullable=False),
)

Millimetres = Annotated[FiniteFloat, Strict(), Field(gt=0, le=1000)]


class RecordFields(BaseModel):
    """A record's measurements, as a client writes them (POST /records, PUT /records/{id})."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sepal_length_mm": 51,
                    "sepal_width_mm": 35,
                    "petal_length_mm": 14,
                    "petal_width_mm": 2,
                }
            ]
        },
    )

    sepal_length_mm: Millimetres
    sepal_width_mm: Millimetres
    petal_length_mm: Millimetres
    petal_width_mm: Millimetres

    def values(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COLUMNS}


class Record(RecordFields):
    """A stored record: its id, its measurements and the revision of its last write."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": 151,
                    "sepal_length_mm": 51.0,
                    "sepal_width_mm": 35.0,
                    "petal_length_mm": 14.0,
                    "petal_width_mm": 2.0,
                    "revision": 151,
                }
            ]
        },
    )

    id: int
    revision: int


def connect(url: str, timeout_seconds: float, pool_size: int = 5) -> Engine:
    """An engine whose every wait is bounded by about `timeout_seconds`: for a pooled connection,
    to connect, for a statement (PostgreSQL) or a lock (SQLite). A database that is down or hung
    is then an error within that time, never a request that hangs."""
    url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": timeout_seconds}
    if parsed.get_backend_name() != "sqlite":
        # pre-ping: after a database restart the pooled connections are dead; test each one
        # when it is taken, so that the first request after the restart does not fail on it.
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": max(1, round(timeout_seconds)),  # libpq: whole seconds
                "options": f"-c statement_timeout={round(timeout_seconds * 1000)}",
                "application_name": "data-cache",
            },
            **pool,
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": timeout_seconds}, **pool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL: readers (the proxy, the warmer) do not wait for a writer.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine


def create_tables(engine: Engine) -> None:
    """The tables and the counter row, if missing (the seed runs this; the services do not)."""
    with engine.begin() as conn:
        metadata.create_all(conn)
        if conn.execute(select(revisions.c.last)).first() is None:
            conn.execute(insert(revisions).values(id=1, last=0))


def _next_revision(conn: Connection) -> int:
    """A new revision; the counter row stays locked (PostgreSQL) until the caller commits."""
    query = update(revisions).values(last=revisions.c.last + 1).returning(revisions.c.last)
    return int(conn.execute(query).scalar_one())


def _record(row: RowMapping) -> Record:
    return Record.model_validate({name: row[name] for name in ("id", *COLUMNS, "revision")})


def read(engine: Engine, record_id: int) -> Record | None:
    with engine.connect() as conn:
        row = conn.execute(select(records).where(records.c.id == record_id)).mappings().first()
    return None if row is None else _record(row)


def add(engine: Engine, new: Sequence[RecordFields]) -> list[Record]:
    """Store new records, in one transaction; each gets an id and a revision of its own."""
    added = []
    with engine.begin() as conn:
        for fields in new:
            revision = _next_revision(conn)
            query = insert(records).values(
                **fields.values(), revision=revision, updated_at=datetime.now(UTC)
            )
            record_id = conn.execute(query.returning(records.c.id)).scalar_one()
            added.append(Record(id=record_id, revision=revision, **fields.values()))
    return added


def change(engine: Engine, record_id: int, fields: RecordFields) -> Record | None:
    """Overwrite a record's measurements under a new revision; None when there is no such id."""
    with engine.connect() as conn:
        revision = _next_revision(conn)
        query = (
            update(records)
            .where(records.c.id == record_id)
            .values(**fields.values(), revision=revision, updated_at=datetime.now(UTC))
        )
        if conn.execute(query).rowcount == 0:
            conn.rollback()  # the revision goes unused: give it back
            return None
        conn.commit()
    return Record(id=record_id, revision=revision, **fields.values())


def changed_since(engine: Engine, revision: int, limit: int) -> list[Record]:
    """Records written after `revision`, oldest write first: what the warmer has not seen."""
    query = (
        select(records).where(records.c.revision > revision).order_by(records.c.revision)
    ).limit(limit)
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query).mappings()]
