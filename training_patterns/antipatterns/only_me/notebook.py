"""The antipattern: one person's notebook, exported as a script. It trains and leaves a model
file; nothing else is recorded.

    .venv/bin/python -m training_patterns.antipatterns.only_me.notebook

Run it twice and the model differs: the rows are shuffled with an unseeded generator. The
regularization is whatever the last cell edit left, the data is whatever was on the laptop
that day, and the environment is whatever was installed: none of it is written down. All that
leaves the laptop is model.onnx and its card, and a re-run (reproduce.check) finds nothing to
work from. Compare recorded.py, which fits with the same code.
"""

# %% imports, as they piled up
import logging
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.logs import configure_logging
from shared.training import Dataset, export, iris_dataset

logger = logging.getLogger(__name__)
OUT = Path(".local/only_me/notebook")  # "my model folder"


def run(out: Path = OUT) -> dict[str, object]:
    # %% load and shuffle the data (no seed: "it's random anyway")
    iris = iris_dataset()
    order = np.random.default_rng().permutation(len(iris.y))
    data = Dataset(iris.x[order], iris.y[order], iris.labels, iris.feature_names)

    # %% fit: C tried by hand until it looked good
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.7, max_iter=1000))

    # %% export and eyeball the accuracy
    card = export(model, data, "only-me-iris", "1.0.0", out)
    logger.info("accuracy %s, model in %s", card["metrics"]["test_accuracy"], out)
    return card


if __name__ == "__main__":
    configure_logging("only-me-notebook", "INFO")
    run()
