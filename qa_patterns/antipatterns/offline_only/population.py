"""Offline only (antipattern), the simulated users: the behaviour the test set cannot see.

The app shows a visitor the species it predicts for a flower and how sure it is ("88 %
versicolor"). A visitor trusts an answer shown at TRUSTED (80 %) or more: a trusted, right
answer converts with online_ab_test's CONVERT_IF_RIGHT (0.30); a wrong one, or one that hedges
("55 % versicolor", even when right), with CONVERT_IF_WRONG (0.05). Test accuracy scores the
label alone, so a model that is right as often but sure less often wins offline and loses here.
The visits themselves are online_ab_test's (simulate.py: the flowers, the sticky user ids, the
conversion sent to POST /events with the prediction's request id); only the rule is new.

    .venv/bin/python -m qa_patterns.antipatterns.offline_only.population \
        --url http://localhost:8250 --requests 1500 --users 750
"""

from typing import Any

from qa_patterns.online_ab_test import simulate
from qa_patterns.online_ab_test.simulate import CONVERT_IF_RIGHT, CONVERT_IF_WRONG, true_species

TRUSTED = 0.8


def converts(row: list[float], prediction: dict[str, Any], draw: float) -> bool:
    """Whether a visitor shown `prediction` for `row` converts, `draw` uniform in [0, 1)."""
    right = prediction["label"] == true_species(row)
    sure = prediction["probabilities"][prediction["label"]] >= TRUSTED
    return draw < (CONVERT_IF_RIGHT if right and sure else CONVERT_IF_WRONG)


def main(argv: list[str] | None = None) -> int:
    return simulate.main(argv, population=converts)


if __name__ == "__main__":
    raise SystemExit(main())
