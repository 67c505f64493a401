r"""Offline only (antipattern), the release: what decides whether the candidate reaches users.

Both paths start from the offline evaluation: each model's accuracy on the same held-out test
set (the quarter of iris that shared.training.export keeps out of training, written into each
model's card). The candidate wins it.

- `offline-only`, the antipattern: the candidate wins offline, so it is shipped: B gets 100 %
  of the traffic at once. Nothing online is defined, logged or looked at; whatever the users
  do next, the release is done.
- `ab`, the fix: winning offline earns the candidate a test, not a release: B gets 10 % of the
  users behind online_ab_test's proxy (sticky by user id). The KPI is defined (conversions per
  prediction), logged (each model records its answers, the clients their users' conversions),
  and online_ab_test's report compares group B with group A; its guard is the kill switch
  (`report --roll-back-at`, or `report.guard`): B significantly worse, B's weight 0, at once.

    .venv/bin/python -m qa_patterns.antipatterns.offline_only.release offline-only \
        --proxy http://localhost:8250
    .venv/bin/python -m qa_patterns.antipatterns.offline_only.release ab --proxy http://localhost:8250
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from qa_patterns.online_ab_test.split import Split, set_b_percent

CURRENT_DIR = Path("models/iris")
CANDIDATE_DIR = Path("models/offline_only_candidate")
AB_PERCENT = 10.0


@dataclass(frozen=True)
class OfflineEvaluation:
    """Test accuracy of the current model and of the candidate, on the same held-out rows."""

    current: float
    candidate: float

    @property
    def candidate_wins(self) -> bool:
        return self.candidate > self.current

    def __str__(self) -> str:
        return (
            f"offline test accuracy: current {self.current:.4f}, candidate {self.candidate:.4f} "
            f"({self.candidate - self.current:+.4f})"
        )


def evaluate(
    current_dir: Path = CURRENT_DIR, candidate_dir: Path = CANDIDATE_DIR
) -> OfflineEvaluation:
    """The offline evaluation: the test accuracy each card records."""

    def accuracy(model_dir: Path) -> float:
        card = json.loads((model_dir / "model.json").read_text())  # shared.training's card
        return float(card["metrics"]["test_accuracy"])

    return OfflineEvaluation(accuracy(current_dir), accuracy(candidate_dir))


def offline_only(proxy_url: str, evaluation: OfflineEvaluation) -> Split | None:
    """The antipattern: a win on the test set ships the candidate to every user."""
    if not evaluation.candidate_wins:
        return None
    return set_b_percent(proxy_url, 100)


def ab(
    proxy_url: str, evaluation: OfflineEvaluation, b_percent: float = AB_PERCENT
) -> Split | None:
    """The fix: a win on the test set starts an online A/B test, B at a small share."""
    if not evaluation.candidate_wins:
        return None
    return set_b_percent(proxy_url, b_percent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Release the candidate: offline-only, or an A/B")
    parser.add_argument("path", choices=["offline-only", "ab"], help="the release path")
    parser.add_argument("--proxy", default="http://localhost:8250", help="online_ab_test's proxy")
    parser.add_argument("--current", type=Path, default=CURRENT_DIR, help="%(default)s")
    parser.add_argument("--candidate", type=Path, default=CANDIDATE_DIR, help="%(default)s")
    parser.add_argument("--b-percent", type=float, default=AB_PERCENT, help="ab: B's share")
    args = parser.parse_args(argv)
    evaluation = evaluate(args.current, args.candidate)
    sys.stdout.write(f"{evaluation}\n")
    if args.path == "offline-only":
        split = offline_only(args.proxy, evaluation)
        done = (
            f"shipped: the candidate serves {split.b_percent:g} % of the traffic" if split else ""
        )
    else:
        split = ab(args.proxy, evaluation, args.b_percent)
        done = (
            f"online A/B test: the candidate serves {split.b_percent:g} % of the users; "
            "the KPI per variant decides"
            if split
            else ""
        )
    sys.stdout.write(f"{done or 'the candidate does not win offline: not released'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
