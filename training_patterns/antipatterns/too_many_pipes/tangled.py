"""The antipattern: the same pipeline as scripts that call each other and reach into stores on
their own. Nothing declares the graph: evaluate calls train, which calls preprocess, which calls
gather; evaluate calls preprocess again for the test rows, so gather and preprocess run twice.
Each script opens its own store with its own literal path (a CSV "export" here, a SQLite
database there): change a store and you change every script that knows it.

    python -m training_patterns.antipatterns.too_many_pipes.tangled
"""

import csv
import json
import os
import sqlite3

import numpy as np
from sklearn.linear_model import LogisticRegression

from shared.training import iris_dataset

WORK = ".local/too_many_pipes/tangled"
CALLS: list[str] = []  # which script ran, in order: the graph nobody declared


def gather() -> str:
    CALLS.append("gather")
    os.makedirs(WORK, exist_ok=True)
    path = f"{WORK}/iris_export.csv"
    data = iris_dataset()
    with open(path, "w", newline="") as file:  # the "export from the warehouse"
        csv.writer(file).writerows([*x, y] for x, y in zip(data.x, data.y, strict=True))
    return path


def preprocess() -> str:
    CALLS.append("preprocess")
    with open(gather(), newline="") as file:
        rows = np.array([[float(v) for v in row] for row in csv.reader(file)])
    x = (rows[:, :4] - rows[:, :4].mean(axis=0)) / rows[:, :4].std(axis=0)
    db = sqlite3.connect(f"{WORK}/features.db")  # another store, another literal
    db.execute("DROP TABLE IF EXISTS features")
    db.execute("CREATE TABLE features (a, b, c, d, label, test)")
    test = np.arange(len(rows)) % 5 == 0
    db.executemany(
        "INSERT INTO features VALUES (?, ?, ?, ?, ?, ?)",
        [(*r, float(y), int(t)) for r, y, t in zip(x.tolist(), rows[:, 4], test, strict=True)],
    )
    db.commit()
    db.close()
    return f"{WORK}/features.db"


def train() -> LogisticRegression:
    CALLS.append("train")
    db = sqlite3.connect(preprocess())
    rows = np.array(db.execute("SELECT * FROM features WHERE test = 0").fetchall())
    db.close()
    return LogisticRegression(max_iter=1000).fit(rows[:, :4], rows[:, 4].astype(int))


def evaluate() -> dict[str, object]:
    CALLS.append("evaluate")
    model = train()
    db = sqlite3.connect(preprocess())  # again: the test rows
    rows = np.array(db.execute("SELECT * FROM features WHERE test = 1").fetchall())
    db.close()
    accuracy = float((model.predict(rows[:, :4]) == rows[:, 4]).mean())
    return {"calls": list(CALLS), "test_rows": len(rows), "accuracy": round(accuracy, 4)}


if __name__ == "__main__":
    print(json.dumps(evaluate()), flush=True)  # noqa: T201
