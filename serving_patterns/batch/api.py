"""A small read API over the batch pattern's tables: what is predicted, what is not, the runs.

    uvicorn serving_patterns.batch.api:create_app --factory --port 8030

It is not part of the pattern's data path (the job reads and writes the tables directly); it
is how a person, or a test, looks at the outcome: /data/all, /data/predicted, /data/unpredicted
and /data/failed page through the input rows with their predictions, /data/summary counts them,
/runs lists the latest runs with what each one did.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, case, func, select, text
from sqlalchemy.exc import DBAPIError

from serving_patterns.batch import storage
from serving_patterns.batch.settings import ApiSettings
from serving_patterns.batch.storage import FEATURES, items, predictions, runs
from shared.service import create_service

logger = logging.getLogger(__name__)

Subset = Literal["all", "predicted", "unpredicted", "failed"]


class Row(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "features": dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)),
                    "status": "done",
                    "label": "setosa",
                    "probability": 0.97,
                    "error": None,
                    "run_id": 1,
                }
            ]
        }
    )

    id: int
    features: dict[str, float | None]  # None: NULL, or a value JSON cannot carry (inf, NaN)
    status: Literal["done", "failed"] | None  # None: no prediction yet
    label: str | None
    probability: float | None
    error: str | None
    run_id: int | None


class Page(BaseModel):
    rows: list[Row]
    next_after: int | None  # pass as ?after= for the next page; None on the last page


class Summary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": 10000, "predicted": 9996, "failed": 4, "unpredicted": 0}]
        }
    )

    items: int
    predicted: int
    failed: int
    unpredicted: int


class Run(BaseModel):
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    retry: str
    model_version: str
    planned_rows: int | None
    planned_chunks: int | None
    scored: int | None
    failed: int | None
    unscored: int | None
    message: str | None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    engine: Engine = storage.connect(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # so that an empty database shows empty tables; /ready tells if it is down
            await asyncio.to_thread(storage.create_tables, engine)
        except DBAPIError as exc:
            logger.warning("could not create the tables: %s", exc)
        yield
        engine.dispose()

    def ping() -> str | None:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            return f"database not answering: {exc.__class__.__name__}"
        return None

    async def database_ready() -> str | None:
        return await asyncio.to_thread(ping)

    app = create_service(
        "batch-api",
        settings,
        lifespan,
        description=__doc__ or "",
        readiness={"database": database_ready},
    )

    @app.exception_handler(DBAPIError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": f"database error: {exc.__class__.__name__}"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    unavailable: dict[int | str, dict[str, Any]] = {503: {"description": "Database unavailable"}}

    @app.get("/data/summary", tags=["data"], responses=unavailable)
    def summary() -> Summary:
        """How many input rows are predicted, failed, or still without a prediction."""
        status = predictions.c.status
        query = select(
            func.count(),
            func.count(case((status == "done", 1))),
            func.count(case((status == "failed", 1))),
        ).select_from(items.outerjoin(predictions, predictions.c.item_id == items.c.id))
        with engine.connect() as conn:
            total, done, failed = conn.execute(query).one()
        return Summary(
            items=total, predicted=done, failed=failed, unpredicted=total - done - failed
        )

    @app.get("/data/{subset}", tags=["data"], responses=unavailable)
    def data(
        subset: Annotated[Subset, Path(description="Which rows")],
        after: Annotated[int, Query(ge=storage.MIN_ID, le=storage.MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Page:
        """Input rows with their prediction, by id, `limit` at a time from the id after `after`."""
        p = predictions.c
        query = (
            select(items, p.status, p.label, p.probability, p.error, p.run_id)
            .select_from(items.outerjoin(predictions, p.item_id == items.c.id))
            .where(items.c.id > after)
            .order_by(items.c.id)
            .limit(limit)
        )
        if subset == "predicted":
            query = query.where(p.status == "done")
        elif subset == "failed":
            query = query.where(p.status == "failed")
        elif subset == "unpredicted":
            query = query.where(p.item_id.is_(None))
        with engine.connect() as conn:
            found = conn.execute(query).mappings().all()
        rows = [
            Row(
                id=row["id"],
                features={name: _finite(row[name]) for name in FEATURES},
                status=row["status"],
                label=row["label"],
                probability=_finite(row["probability"]),
                error=row["error"],
                run_id=row["run_id"],
            )
            for row in found
        ]
        return Page(rows=rows, next_after=rows[-1].id if len(rows) == limit else None)

    @app.get("/runs", tags=["runs"], responses=unavailable)
    def recent_runs(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[Run]:
        """The latest runs first, each with what it planned, scored, failed and left."""
        with engine.connect() as conn:
            found = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings()
            return [Run.model_validate(dict(row)) for row in found]

    return app
