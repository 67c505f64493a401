"""Demo data for the data cache pattern: creates the tables and fills them with iris-like records.

    .venv/bin/python -m serving_patterns.data_cache.seed   # tops the table up to 150 records

Safe to run again: it only adds the records that are missing. In a real system the data
warehouse is filled by others; this stands in for them. The same run always gives the same
values (the random stream is seeded), so the README's output is what `make run` shows.
"""

import logging
import random
import sys

from sqlalchemy import func, select

from serving_patterns.data_cache import records
from serving_patterns.data_cache.records import RecordFields
from serving_patterns.data_cache.settings import SeedSettings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)

# Per class (setosa, versicolor, virginica): the mean and spread of the measurements, in mm.
MEANS = [(50, 34, 15, 2), (59, 28, 43, 13), (66, 30, 56, 20)]
SPREADS = [(3.5, 3.8, 1.7, 1.1), (5.2, 3.1, 4.7, 2.0), (6.4, 3.2, 5.5, 2.7)]


def demo_records(first_id: int, count: int) -> list[RecordFields]:
    """`count` records for ids first_id..: the same values for the same arguments."""
    rng = random.Random(first_id)
    made = []
    for _ in range(count):
        kind = rng.randrange(3)
        values = [
            max(1, round(rng.gauss(mean, spread)))
            for mean, spread in zip(MEANS[kind], SPREADS[kind], strict=True)
        ]
        made.append(RecordFields(**dict(zip(records.COLUMNS, values, strict=True))))
    return made


def seed(settings: SeedSettings) -> int:
    """Create the tables, add records until there are settings.records; how many were added."""
    engine = records.connect(settings.database_url, timeout_seconds=10)
    try:
        records.create_tables(engine)
        with engine.connect() as conn:
            present, last = conn.execute(
                select(func.count(), func.coalesce(func.max(records.records.c.id), 0))
            ).one()
        missing = max(0, settings.records - present)
        if missing:
            records.add(engine, demo_records(last + 1, missing))
        logger.info("the records table holds %d records (%d added)", present + missing, missing)
        return int(missing)
    finally:
        engine.dispose()


def main() -> int:
    settings = SeedSettings()
    configure_logging("data-cache-seed", settings.log_level)
    seed(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
