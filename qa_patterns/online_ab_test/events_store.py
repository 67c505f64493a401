"""The online A/B test's client events: what a user did after a prediction, in the database the
predictions are recorded into (the shared inference log's `inferences` table).

An event names the request id of the prediction it follows, so that the report joins the two on
it (and carries the user id, which the inference log does not). An event is stored once per
(request id, event): a client that sends a conversion again (a retry after a lost answer) does
not count twice.

Synchronous (psycopg or sqlite3 underneath); the events collector runs it in a thread.
"""

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from shared.database import sqlalchemy_url

Token = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class ClientEvent(BaseModel):
    """What a user did after the prediction `request_id`, as the client reports it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d",
                    "user_id": "user-42",
                    "event": "conversion",
                    "value": 1.0,
                }
            ]
        },
    )

    request_id: Token = Field(description="The X-Request-ID of the prediction the event follows")
    user_id: Token | None = Field(None, description="The user, as sent in X-User-ID")
    event: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        "conversion", description="What happened: conversion (the KPI's), or another name"
    )
    value: FiniteFloat = Field(1.0, description="An amount the event carries (a basket, say)")


class StoredEvent(ClientEvent):
    received_at: datetime


@functools.cache
def events_table() -> Table:
    return Table(
        "client_events",
        MetaData(),
        Column("request_id", String(128), primary_key=True),
        Column("event", String(32), primary_key=True),
        Column("user_id", String(128), nullable=True, index=True),
        Column("value", Float, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )


def connect(database_url: str, timeout_seconds: float = 5.0) -> Engine:
    """The events database, with its table created if missing."""
    url = make_url(sqlalchemy_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, object] = {"timeout": timeout_seconds}
    else:
        connect_args = {"connect_timeout": max(1, round(timeout_seconds))}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    try:
        events_table().metadata.create_all(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def store(engine: Engine, events: Sequence[ClientEvent]) -> int:
    """Insert the events in one transaction: how many were new (a repeat is skipped)."""
    if not events:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    table = events_table()
    # RETURNING, not rowcount: an executemany's rowcount is not the rows inserted everywhere.
    statement = (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=["request_id", "event"])
        .returning(table.c.request_id)
    )
    now = datetime.now(UTC)
    with engine.begin() as connection:
        inserted = connection.execute(
            statement, [e.model_dump() | {"received_at": now} for e in events]
        ).all()
    return len(inserted)


def read_events(engine: Engine, event: str | None = None) -> list[StoredEvent]:
    """Every stored event (of one kind), oldest first."""
    table = events_table()
    query = select(table).order_by(table.c.received_at, table.c.request_id)
    if event is not None:
        query = query.where(table.c.event == event)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    events = []
    for row in rows:
        received_at = row["received_at"]
        if received_at.tzinfo is None:  # SQLite keeps no time zone: they were written in UTC
            received_at = received_at.replace(tzinfo=UTC)
        events.append(StoredEvent.model_validate({**row, "received_at": received_at}))
    return events
