"""What a search recorded, for a terminal: from the MLflow server (every trial's run, by study,
and the registered best), or from the study itself in Optuna's storage.

    python -m training_patterns.parameter_architecture_search.trials --tracking-uri URL
    python -m training_patterns.parameter_architecture_search.trials --storage URL --study S

The MLflow UI shows the same runs (the experiment parameter-architecture-search) and more.
"""

import argparse
import logging
from collections import defaultdict

import optuna
from mlflow import MlflowClient

from shared import tracking
from training_patterns.parameter_architecture_search import space
from training_patterns.parameter_architecture_search.search import (
    SCORE,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    WORKER_ATTR,
    open_storage,
)
from training_patterns.parameter_architecture_search.settings import RegisterSettings

COLUMNS = "{:>5}  {:<8}  {:<19}  {:>11}  {}"


def logged(client: MlflowClient, experiment: str, model: str, alias: str) -> list[str]:
    """Per study, the trials' runs (numbers in order: each once), then the registered best."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=5000) if found else []
    by_study: dict[str, list[tuple[int, str, str, float | None, str]]] = defaultdict(list)
    for run in runs:
        tags = run.data.tags
        if STATE_TAG in tags:  # a trial's run (the register step's runs have no state)
            by_study[tags[STUDY_TAG]].append((
                int(tags[TRIAL_TAG]), tags[STATE_TAG], run.data.params.get(space.MODEL, "-"),
                run.data.metrics.get(SCORE), tags.get(WORKER_ATTR, "-"),
            ))  # fmt: skip
    lines: list[str] = []
    for study, trials in sorted(by_study.items()):
        numbers = sorted(t[0] for t in trials)
        once = "each once" if len(set(numbers)) == len(numbers) else "SOME TWICE"
        lines.append(
            f"study {study}: {len(trials)} trials logged, numbers {numbers[0]} to {numbers[-1]}, "
            f"{once}, workers: {len({t[4] for t in trials})}"
        )
    best = tracking.alias_version(client, model, alias)
    if best is None:
        lines.append(f"{alias}: none")
    else:
        tags = best.tags
        lines.append(
            f"{alias}: {model} version {best.version}, study {tags.get(STUDY_TAG)} trial "
            f"{tags.get(TRIAL_TAG)} ({tags.get(space.MODEL)}), {SCORE} {tags.get(SCORE)}, "
            f"test_accuracy {tags.get('test_accuracy')}"
        )
    for study, trials in sorted(by_study.items()):
        lines.append(f"study {study}:")
        lines.append(COLUMNS.format("trial", "state", "model", SCORE, "worker").rstrip())
        for number, state, family, score, worker in sorted(trials):
            lines.append(COLUMNS.format(number, state, family, _score(score), worker).rstrip())
    return lines


def studied(storage_url: str, schema: str, study_name: str) -> list[str]:
    """The study's trials as Optuna has them, then its best trial and params."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, schema))
    lines = [COLUMNS.format("trial", "state", "model", SCORE, "params").rstrip()]
    for trial in study.get_trials(deepcopy=False):
        # A pruned trial's score is its mean when it was stopped: its last reported value.
        score, last = trial.value, trial.last_step
        if score is None and last is not None:
            score = trial.intermediate_values[last]
        own = {k: _short(v) for k, v in trial.params.items() if k != space.MODEL}
        lines.append(
            COLUMNS.format(
                trial.number, trial.state.name, str(trial.params.get(space.MODEL, "-")),
                _score(score),
                " ".join(f"{k}={v}" for k, v in own.items()),
            ).rstrip()
        )  # fmt: skip
    best = study.best_trial
    family = best.params[space.MODEL]
    lines.append(f"best: trial {best.number} ({family}), {SCORE} {_score(best.value)}")
    return lines


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defaults = RegisterSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="read the trials' runs from this MLflow server")
    parser.add_argument("--experiment", default=defaults.experiment)
    parser.add_argument("--model", default=defaults.model_name)
    parser.add_argument("--alias", default=defaults.alias)
    parser.add_argument("--storage", help="read the study from this Optuna storage instead")
    parser.add_argument("--storage-schema", default=defaults.storage_schema)
    parser.add_argument("--study", default=defaults.study)
    args = parser.parse_args()
    if args.storage:
        lines = studied(args.storage, args.storage_schema, args.study)
    else:
        client = tracking.connect(args.tracking_uri or defaults.tracking_uri)
        lines = logged(client, args.experiment, args.model, args.alias)
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
