"""The training (weekly): train → evaluate → register, on the latest data refresh, a Metaflow
flow.

    .venv/bin/python -m training_patterns.pipeline_training.training_flow run
    .venv/bin/python -m training_patterns.pipeline_training.training_flow run --data-run 1234
    .venv/bin/python -m training_patterns.pipeline_training.training_flow resume   # after a failure

start picks the data refresh run to train on (the latest successful one, or --data-run) and
reads its dataset from Metaflow's datastore; train stores the exported model files, evaluate
their accuracy on the held-out rows, register records the run and the model version in MLflow
and applies the gate. A failed step leaves the run failed at that step; `resume` clones the
steps before it (their stored outputs) and runs again from it: a failure at register does not
train again.
"""

from training_patterns.pipeline_training.settings import PipelineSettings, metaflow_environment

metaflow_environment()  # before metaflow is imported: it reads its configuration once

# Metaflow's names from the modules that define them (the package re-exports them untyped).
from metaflow.decorators import step  # noqa: E402
from metaflow.flowspec import FlowSpec  # noqa: E402
from metaflow.metaflow_current import current  # noqa: E402
from metaflow.parameters import Parameter  # noqa: E402


class TrainingFlow(FlowSpec):
    """Train on a data refresh's dataset, evaluate the exported model, register it and gate."""

    data_run = Parameter(
        "data-run", default="latest", help="DataRefreshFlow run id to train on (latest: the last)"
    )

    @step
    def start(self) -> None:
        from training_patterns.pipeline_training import steps

        self.data_pathspec = steps.data_run(str(self.data_run))  # DataRefreshFlow/<run id>
        self.data_version = steps.refresh_output(self.data_pathspec, "data_version")
        self.ran: list[dict[str, object]] = []  # each step's time and process
        self.next(self.train)

    @step
    def train(self) -> None:
        from training_patterns.pipeline_training import steps

        settings = PipelineSettings()
        self.ran = [*self.ran, steps.begin(settings, "train")]
        dataset = steps.refresh_output(self.data_pathspec, "dataset")
        self.model = steps.train(dataset, self.data_version, settings)
        self.next(self.evaluate)

    @step
    def evaluate(self) -> None:
        from training_patterns.pipeline_training import steps

        self.ran = [*self.ran, steps.begin(PipelineSettings(), "evaluate")]
        dataset = steps.refresh_output(self.data_pathspec, "dataset")
        self.evaluation = steps.evaluate(self.model, dataset)
        self.next(self.register)

    @step
    def register(self) -> None:
        from training_patterns.pipeline_training import steps

        settings = PipelineSettings()
        self.ran = [*self.ran, steps.begin(settings, "register")]
        from shared import tracking

        client = tracking.connect(settings.tracking_uri)
        refresh = {
            name: steps.refresh_output(self.data_pathspec, name)
            for name in ("data_version", "counts", "rejected")
        }
        self.outcome = steps.register(
            client, settings, self.model, self.evaluation, self.data_pathspec, refresh,
            pipeline_run=f"{current.flow_name}/{current.run_id}",
        )  # fmt: skip
        self.next(self.end)

    @step
    def end(self) -> None:
        outcome = self.outcome
        print(  # noqa: T201 (Metaflow logs a step's stdout under the step's name)
            f"mlflow run {outcome.run_id}: version {outcome.version}, test accuracy "
            f"{outcome.test_accuracy:.4f}, {'promoted' if outcome.promoted else 'not promoted'}"
        )


if __name__ == "__main__":
    TrainingFlow()  # type: ignore[no-untyped-call]
