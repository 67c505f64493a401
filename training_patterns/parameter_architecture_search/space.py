"""The search space, declared: which model families (the architecture) and, for each, which
parameters and ranges Optuna may pick. One trial picks a family, then that family's parameters.

The space is data (Optuna's distributions), so it is read, logged and changed in one place;
`suggest` asks a trial for a point in it and `build` makes the scikit-learn pipeline of a point.
"""

import warnings
from collections.abc import Mapping

import optuna
from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
)
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Params = dict[str, str | int | float]

MODEL = "model"  # the architecture: which family of model
# Every family: the features, scaled, then rotated onto this many principal components.
COMMON: dict[str, BaseDistribution] = {"pca_components": IntDistribution(2, 4)}
FAMILIES: dict[str, dict[str, BaseDistribution]] = {
    "logistic_regression": {"C": FloatDistribution(1e-3, 1e2, log=True)},
    "random_forest": {
        "n_estimators": IntDistribution(10, 100, step=10),
        "max_depth": IntDistribution(2, 8),
    },
    "gradient_boosting": {
        "n_estimators": IntDistribution(10, 100, step=10),
        "learning_rate": FloatDistribution(0.01, 0.5, log=True),
        "max_depth": IntDistribution(1, 4),
    },
    "mlp": {
        "hidden_units": IntDistribution(4, 32, log=True),
        "alpha": FloatDistribution(1e-5, 1e-1, log=True),
    },
}


def describe() -> dict[str, object]:
    """The space as plain data: logged with each study so a run says what was searched."""
    return {
        MODEL: list(FAMILIES),
        **{name: repr(d) for name, d in COMMON.items()},
        **{
            f"{family}.{name}": repr(d)
            for family, space in FAMILIES.items()
            for name, d in space.items()
        },
    }


def _suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> str | int | float:
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    raise TypeError(f"{name}: no suggest for {type(distribution).__name__}")


def suggest(trial: optuna.Trial) -> Params:
    """A point of the space: the family first, then its own parameters, named family.param
    (a random forest's max_depth is not a gradient boosting's)."""
    family = str(trial.suggest_categorical(MODEL, list(FAMILIES)))
    params: Params = {MODEL: family}
    for name, distribution in COMMON.items():
        params[name] = _suggest(trial, name, distribution)
    for name, distribution in FAMILIES[family].items():
        params[f"{family}.{name}"] = _suggest(trial, f"{family}.{name}", distribution)
    return params


def build(params: Mapping[str, str | int | float], seed: int) -> Pipeline:
    """The pipeline of a point: scale, PCA, the family's classifier, every one seeded."""
    family = str(params[MODEL])
    own = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{family}.")}
    classifier: object
    if family == "logistic_regression":
        classifier = LogisticRegression(C=float(own["C"]), max_iter=1000, random_state=seed)
    elif family == "random_forest":
        classifier = RandomForestClassifier(
            n_estimators=int(own["n_estimators"]), max_depth=int(own["max_depth"]),
            random_state=seed,
        )  # fmt: skip
    elif family == "gradient_boosting":
        classifier = GradientBoostingClassifier(
            n_estimators=int(own["n_estimators"]), learning_rate=float(own["learning_rate"]),
            max_depth=int(own["max_depth"]), random_state=seed,
        )  # fmt: skip
    elif family == "mlp":
        classifier = MLPClassifier(
            hidden_layer_sizes=(int(own["hidden_units"]),), alpha=float(own["alpha"]),
            max_iter=500, random_state=seed,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown model family {family!r}: one of {', '.join(FAMILIES)}")
    pca = PCA(n_components=int(params["pca_components"]), random_state=seed)
    return make_pipeline(StandardScaler(), pca, classifier)


def quiet_fits() -> None:
    """A small MLP may stop at max_iter before it converges: a trial's score says how good it
    is, the warning says nothing more."""
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
