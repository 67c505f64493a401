"""In process: the candidate wins offline and loses on the simulated users' KPI, the users'
rule, and what each release path does to the proxy's split (proxy.py before stub models).

The models are the ones local mode serves (models/iris, which its build trains, and the
trainer's models/offline_only_candidate), trained here when they are missing; scikit-learn is
imported only where it is used: every test worker collects this module, one runs the model
tests (one xdist group)."""

import random
from pathlib import Path

import httpx2
import numpy as np
import pytest

from qa_patterns.antipatterns.offline_only import population, release
from qa_patterns.antipatterns.offline_only.population import TRUSTED, converts
from qa_patterns.antipatterns.offline_only.release import OfflineEvaluation
from qa_patterns.antipatterns.offline_only.train import DEFAULT_OUT
from qa_patterns.antipatterns.offline_only.train import main as train
from qa_patterns.online_ab_test.simulate import (
    CONVERT_IF_RIGHT,
    CONVERT_IF_WRONG,
    flower,
    true_species,
)
from qa_patterns.online_ab_test.split import set_b_percent
from qa_patterns.online_ab_test.tests.test_proxy import proxy
from shared.model import Predictor

MODELS_ROOT = Path("models")  # shared.training's, where local mode's build puts them
MODELS = pytest.mark.xdist_group("offline_only_models")
VERSICOLOR = [5.9, 2.8, 4.3, 1.3]


@pytest.fixture(scope="module")
def models() -> tuple[Path, Path]:
    """The current model and the candidate, as local mode serves them."""
    current, candidate = MODELS_ROOT / "iris", DEFAULT_OUT
    if not (current / "model.json").exists():
        from shared.training import train_iris

        train_iris(current)
    assert train(["--out", str(candidate)]) == 0  # trains only when it is missing
    return current, candidate


@MODELS
def test_the_candidate_wins_on_the_test_set(models: tuple[Path, Path]) -> None:
    evaluation = release.evaluate(*models)

    # On the same 38 held-out flowers (shared.training.export's split): 35 right, and 36.
    assert evaluation == OfflineEvaluation(current=0.9211, candidate=0.9474)
    assert evaluation.candidate_wins


@MODELS
def test_the_candidate_loses_on_the_simulated_users_kpi(models: tuple[Path, Path]) -> None:
    rng = random.Random(1)
    rows = [flower(rng) for _ in range(3000)]
    outcome = {}
    for name, model_dir in zip(("current", "candidate"), models, strict=True):
        answers = Predictor(model_dir).predict(rows)
        right = [a["label"] == true_species(r) for r, a in zip(rows, answers, strict=True)]
        sure = [a["probabilities"][a["label"]] >= TRUSTED for a in answers]
        # Each visit's chance of converting, without the draw: the KPI the users would give.
        chance = [
            CONVERT_IF_RIGHT if r and s else CONVERT_IF_WRONG
            for r, s in zip(right, sure, strict=True)
        ]
        outcome[name] = (np.mean(right), np.mean(sure), np.mean(chance))

    (acc_a, sure_a, kpi_a), (acc_b, sure_b, kpi_b) = outcome["current"], outcome["candidate"]
    assert abs(acc_b - acc_a) < 0.01  # as often right on production's flowers too (0.94)
    assert sure_b < 0.5 * sure_a  # but sure half as often: 33 % of its answers, against 78 %
    assert kpi_b < 0.6 * kpi_a  # expected conversion 0.13 against 0.24


def prediction(label: str, probability: float) -> dict[str, object]:
    return {"label": label, "probabilities": {label: probability}}


def test_a_visitor_converts_after_a_sure_right_answer_and_rarely_otherwise() -> None:
    draws = [i / 1000 for i in range(1000)]

    def rate(label: str, probability: float) -> float:
        return sum(converts(VERSICOLOR, prediction(label, probability), d) for d in draws) / 1000

    assert rate("versicolor", 0.97) == CONVERT_IF_RIGHT
    assert rate("versicolor", 0.64) == CONVERT_IF_WRONG  # right, but it hedges
    assert rate("virginica", 0.97) == CONVERT_IF_WRONG  # sure, and wrong


def test_the_offline_only_release_ships_a_winner_and_the_ab_release_tests_it() -> None:
    wins, loses = OfflineEvaluation(0.92, 0.95), OfflineEvaluation(0.92, 0.90)
    with proxy(b_percent=0) as (url, _, _):
        not_shipped = release.offline_only(url, loses)
        unchanged = httpx2.get(f"{url}/weights").json()
        shipped = release.offline_only(url, wins)
        set_b_percent(url, 0)
        tested = release.ab(url, wins)

    assert not_shipped is None and unchanged["b_percent"] == 0
    assert shipped is not None and shipped.b_percent == 100  # everyone, on the test set's word
    assert tested is not None and tested.b_percent == 10  # a share, for the KPI to decide


def test_the_population_cli_runs_online_ab_tests_simulator_with_its_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[list[str] | None, object]] = []

    def main(argv: list[str] | None, population: object) -> int:
        seen.append((argv, population))
        return 0

    monkeypatch.setattr("qa_patterns.online_ab_test.simulate.main", main)

    assert population.main(["--requests", "5"]) == 0
    assert seen == [(["--requests", "5"], converts)]
