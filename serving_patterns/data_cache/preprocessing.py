"""The data cache pattern's preprocessing: a stored record into the row the model takes.

Here it is a unit conversion (millimetres to the centimetres the model was trained on) and the
model's feature order: a stand-in for the joins, aggregates and encodings a real pipeline runs
on each record. DATA_CACHE_PROXY_PREPROCESS_DELAY_SECONDS makes it cost what one would, so the
time a cached record saves can be seen. Its counter, on the proxy's /metrics, is how the tests
tell that a cached record was not preprocessed again.
"""

import time

from prometheus_client import Counter

from serving_patterns.data_cache.records import FEATURES, Record

PREPROCESSED = Counter(
    "data_cache_preprocessing_runs_total", "Records this process has preprocessed"
)


def preprocess(record: Record, delay_seconds: float = 0.0) -> list[float]:
    """The model's input row for `record`. Blocking (the delay stands for CPU work): run it in a
    thread from async code."""
    if delay_seconds:
        time.sleep(delay_seconds)
    PREPROCESSED.inc()
    return [getattr(record, f"{name}_mm") / 10 for name in FEATURES]
