"""The fix: the training pipeline as a declared DAG (gather, validate, preprocess, train,
evaluate) over one data-access layer. Each step is a function of its handle: it reads and
writes only the datasets it declares, so the back end (memory, csv, sqlite) is a setting.

    python -m training_patterns.antipatterns.too_many_pipes.pipeline
"""

import json
import logging
import math
from functools import partial

import numpy as np
from sklearn.linear_model import LogisticRegression

from shared.training import SEED, iris_dataset
from training_patterns.antipatterns.too_many_pipes import dag
from training_patterns.antipatterns.too_many_pipes.data_access import (
    DataAccess,
    Handle,
    Table,
    open_store,
)
from training_patterns.antipatterns.too_many_pipes.settings import PipelineSettings

logger = logging.getLogger(__name__)

SOURCE = "iris"  # the warehouse's table: the only dataset no step writes
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LABEL = "label"


def publish_source(store: DataAccess) -> None:
    """The warehouse's side: the source table the pipeline gathers from."""
    data = iris_dataset()
    rows = [(*map(float, x), float(y)) for x, y in zip(data.x, data.y, strict=True)]
    store.write(SOURCE, Table((*FEATURES, LABEL), rows))


def gather(io: Handle) -> None:
    """Take the source's columns the pipeline uses, with a row id that fixes the split."""
    source = io.read(SOURCE)
    columns = [source.column(c) for c in (*FEATURES, LABEL)]
    rows = [(float(i), *values) for i, values in enumerate(zip(*columns, strict=True))]
    io.write("raw", Table(("row_id", *FEATURES, LABEL), rows))


def validate(io: Handle) -> None:
    """Keep the rows a model can learn from: finite, positive measurements, a known label."""
    raw = io.read("raw")
    good = [
        row
        for row in raw.rows
        if all(math.isfinite(v) and v > 0 for v in row[1:-1]) and row[-1] in (0.0, 1.0, 2.0)
    ]
    if len(good) < len(raw.rows):
        logger.warning("validate dropped %d of %d rows", len(raw.rows) - len(good), len(raw.rows))
    if not good:
        raise ValueError("validate: no valid row in 'raw'")
    io.write("clean", Table(raw.columns, good))


def preprocess(io: Handle, test_every: int) -> None:
    """Hold out every n-th row; standardize with the training rows' mean and spread."""
    clean = io.read("clean")
    data = np.array(clean.rows)
    test = data[:, 0] % test_every == 0
    x, y = data[:, 1:-1], data[:, -1:]
    mean, scale = x[~test].mean(axis=0), x[~test].std(axis=0)
    scaled = np.hstack([(x - mean) / np.where(scale > 0, scale, 1.0), y])
    columns = (*FEATURES, LABEL)
    io.write("train_set", Table(columns, [tuple(r) for r in scaled[~test].tolist()]))
    io.write("test_set", Table(columns, [tuple(r) for r in scaled[test].tolist()]))


def train(io: Handle, regularization: float) -> None:
    """Fit a logistic regression; the model is a table too: a class's intercept and weights."""
    data = np.array(io.read("train_set").rows)
    model = LogisticRegression(C=regularization, max_iter=1000, random_state=SEED)
    model.fit(data[:, :-1], data[:, -1].astype(int))
    rows = [
        (float(c), float(b), *map(float, w))
        for c, b, w in zip(model.classes_, model.intercept_, model.coef_, strict=True)
    ]
    io.write("model", Table(("class", "intercept", *FEATURES), rows))


def evaluate(io: Handle) -> None:
    """Accuracy of the model's table on the held-out rows."""
    model = np.array(io.read("model").rows)
    test = np.array(io.read("test_set").rows)
    scores = test[:, :-1] @ model[:, 2:].T + model[:, 1]
    predicted = model[scores.argmax(axis=1), 0]
    accuracy = float((predicted == test[:, -1]).mean())
    io.write("metrics", Table(("test_rows", "accuracy"), [(float(len(test)), accuracy)]))


def steps(settings: PipelineSettings) -> list[dag.Step]:
    """The declaration: what each step needs, reads and writes."""
    return [
        dag.Step("gather", gather, reads=(SOURCE,), writes=("raw",)),
        dag.Step("validate", validate, depends_on=("gather",), reads=("raw",), writes=("clean",)),
        dag.Step(
            "preprocess",
            partial(preprocess, test_every=settings.test_every),
            depends_on=("validate",),
            reads=("clean",),
            writes=("train_set", "test_set"),
        ),
        dag.Step(
            "train",
            partial(train, regularization=settings.regularization),
            depends_on=("preprocess",),
            reads=("train_set",),
            writes=("model",),
        ),
        dag.Step(
            "evaluate",
            evaluate,
            depends_on=("train", "preprocess"),
            reads=("model", "test_set"),
            writes=("metrics",),
        ),
    ]


def run(settings: PipelineSettings, store: DataAccess | None = None) -> dict[str, object]:
    """Publish the source, run the DAG through the store, and return the result."""
    store = store or open_store(settings.backend, settings.store_dir)
    publish_source(store)
    order = dag.run(steps(settings), store)
    metrics = store.read("metrics")
    return {
        "backend": settings.backend,
        "order": order,
        "test_rows": int(metrics.column("test_rows")[0]),
        "accuracy": round(metrics.column("accuracy")[0], 4),
    }


def main() -> None:
    settings = PipelineSettings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s %(message)s")
    print(json.dumps(run(settings)), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
