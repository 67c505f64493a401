r"""Online A/B test pattern, the client events collector: what users did after a prediction.

A client that showed a prediction to a user reports what the user did next (POST /events: a
conversion, keyed by the prediction's request id and the user id). The events land in the
`client_events` table of the inference database (events_store.py), beside the predictions the
model servers recorded, so that the report (report.py) joins them on request id and computes
the KPI per variant. It knows nothing of the variants: the join tells which model the user saw.

    .venv/bin/uvicorn qa_patterns.online_ab_test.events:create_app --factory --port 8223
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from qa_patterns.online_ab_test import events_store
from qa_patterns.online_ab_test.events_store import ClientEvent
from qa_patterns.online_ab_test.settings import EventsSettings
from shared.service import BODY_ERRORS, create_service

logger = logging.getLogger(__name__)


class Stored(BaseModel):
    """The event, stored. The same event of the same request again (a client's retry) is
    answered alike and stored once: the KPI counts it once."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"request_id": "5f0c6a3e9b2d4f7a8c1e2b3d4a5f6e7d", "event": "conversion"}]
        }
    )

    request_id: str
    event: str


def create_app(settings: EventsSettings | None = None) -> FastAPI:
    settings = settings or EventsSettings()
    timeout = settings.database_timeout_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = None
        try:
            yield
        finally:
            if app.state.engine is not None:
                app.state.engine.dispose()

    async def engine() -> Engine:
        """The database, connected (and its table made) on first use: the collector starts,
        and says it is not ready, while the database is still starting."""
        if app.state.engine is None:
            app.state.engine = await asyncio.wait_for(
                asyncio.to_thread(events_store.connect, settings.database_url, timeout), timeout
            )
        return app.state.engine  # type: ignore[no-any-return]

    async def database_ready() -> str | None:
        try:
            db = await engine()

            def ping() -> None:
                with db.connect() as connection:
                    connection.execute(text("SELECT 1"))

            await asyncio.wait_for(asyncio.to_thread(ping), timeout)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            return f"the events database does not answer: {type(exc).__name__}"
        return None

    app = create_service(
        "online-ab-test-events",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"database": database_ready},
    )

    @app.post(
        "/events",
        tags=["events"],
        responses={**BODY_ERRORS, 503: {"description": "The events database does not answer"}},
    )
    async def record_event(event: ClientEvent) -> Stored:
        """Store what a user did after a prediction (once per request id and event)."""
        try:
            db = await engine()
            new = await asyncio.wait_for(
                asyncio.to_thread(events_store.store, db, [event]), timeout
            )
            if not new:
                logger.info("event %s of %s already stored", event.event, event.request_id)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise HTTPException(
                503,
                f"the events database does not answer: {type(exc).__name__}",
                headers={"Retry-After": "1"},
            ) from None
        return Stored(request_id=event.request_id, event=event.event)

    return app
