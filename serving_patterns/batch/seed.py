"""Demo data for the batch pattern: iris-like rows in the input table, a few of them unscorable.

    python -m serving_patterns.batch.seed       # tops batch_items up to BATCH_SEED_ROWS rows

Safe to run again: it only adds the rows that are missing, so a second run adds none. In a real
system another service fills the input table; this stands in for it.
"""

import logging
import sys

import numpy as np
from sqlalchemy import func, select

from serving_patterns.batch import storage
from serving_patterns.batch.settings import SeedSettings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)

# Per class (setosa, versicolor, virginica): the mean and spread of the four measurements (cm).
MEANS = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
SPREADS = np.array([[0.35, 0.38, 0.17, 0.11], [0.52, 0.31, 0.47, 0.20], [0.64, 0.32, 0.55, 0.27]])
# What a broken upstream sends now and then: a missing value, an overflow, a NaN.
BAD_VALUES: list[tuple[int, float | None]] = [(1, None), (2, float("inf")), (3, float("nan"))]


def demo_rows(first_id: int, count: int, bad_every: int) -> list[tuple[float | None, ...]]:
    """`count` rows for ids first_id.. : the same call always gives the same values (the random
    stream is seeded with first_id, so a run of make run shows the same data as the README)."""
    rng = np.random.default_rng(first_id)
    classes = rng.integers(0, 3, count)
    values = rng.normal(MEANS[classes], SPREADS[classes]).clip(0.1).round(1)
    rows: list[tuple[float | None, ...]] = [tuple(row) for row in values.tolist()]
    if bad_every:
        for index in range((-first_id) % bad_every, count, bad_every):
            column, bad = BAD_VALUES[(first_id + index) // bad_every % len(BAD_VALUES)]
            row = list(rows[index])
            row[column] = bad
            rows[index] = tuple(row)
    return rows


def seed(settings: SeedSettings) -> int:
    """Add rows until the input table holds settings.rows; returns how many were added."""
    engine = storage.connect(settings.database_url)
    try:
        storage.create_tables(engine)
        with engine.connect() as conn:
            present, last = conn.execute(
                select(func.count(), func.coalesce(func.max(storage.items.c.id), 0))
            ).one()
        missing = max(0, settings.rows - present)
        if missing:
            storage.add_items(engine, demo_rows(last + 1, missing, settings.bad_every))
        logger.info("input table holds %d rows (%d added)", present + missing, missing)
        return int(missing)
    finally:
        engine.dispose()


def main() -> int:
    settings = SeedSettings()
    configure_logging("batch-seed", settings.log_level)
    seed(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
