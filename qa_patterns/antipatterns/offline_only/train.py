"""Offline only (antipattern), the trainer: the candidate model, trained and exported once.

The candidate is a logistic regression on the petals alone, strongly regularised (C = 0.1):
the two features that separate iris best, and a penalty that keeps it from overfitting them.
On the held-out quarter of iris that every model of the repository is scored on (the same 38
flowers, shared.training.export's split) it is right more often than the current model,
models/iris (all four features, C = 1): 0.947 against 0.921. What the test accuracy does not
weigh is how sure it sounds: the penalty pulls its probabilities towards a third each, so it
says "55 % versicolor" where the current model says "88 %", and the simulated users
(population.py) buy less after an answer that hedges.

Training-only (scikit-learn, skl2onnx): the trainer's image and the dev venv, never a server.
A one-shot job: it exits at once when the model is already there.

    .venv/bin/python -m qa_patterns.antipatterns.offline_only.train  # models/offline_only_candidate
"""

import argparse
import logging
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("models/offline_only_candidate")
PETALS = [2, 3]  # petal length and width, of iris's four features


def train_candidate(out_dir: Path) -> dict[str, Any]:
    """Fit the candidate on iris's training split, score it on the held-out one, export it."""
    # Imported here: the trainer's run on a model already there exits without loading them.
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shared.training import SEED, export, iris_dataset

    pipeline = make_pipeline(
        ColumnTransformer([("petals", "passthrough", PETALS)]),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=1000, random_state=SEED),
    )
    return export(pipeline, iris_dataset(), "iris-petals", "2.0.0", out_dir)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Train and export the candidate model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="%(default)s")
    parser.add_argument("--force", action="store_true", help="train again even if it is there")
    args = parser.parse_args(argv)
    if (args.out / "model.json").exists() and not args.force:
        logging.info("the candidate is already in %s", args.out)
        return 0
    train_candidate(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
