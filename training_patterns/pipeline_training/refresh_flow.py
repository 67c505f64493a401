"""The data refresh (daily): gather → validate → preprocess, a Metaflow flow.

    .venv/bin/python -m training_patterns.pipeline_training.refresh_flow run
    .venv/bin/python -m training_patterns.pipeline_training.refresh_flow resume   # after a failure

Each step is a process of its own (Metaflow runs `refresh_flow.py step <name>`): it reads what
the step before it stored in the datastore and stores its own output there, so `resume` starts
again at the step that failed, with the earlier steps' outputs cloned, not recomputed. The
training flow reads the latest successful run's dataset (its preprocess step's artefacts).
"""

from training_patterns.pipeline_training.settings import PipelineSettings, metaflow_environment

metaflow_environment()  # before metaflow is imported: it reads its configuration once

# Metaflow's names from the modules that define them (the package re-exports them untyped).
from metaflow.decorators import step  # noqa: E402
from metaflow.flowspec import FlowSpec  # noqa: E402


class DataRefreshFlow(FlowSpec):
    """Gather the rows, filter and count the bad ones, make the dataset and its version."""

    @step
    def start(self) -> None:
        self.ran: list[dict[str, object]] = []  # each step's time and process
        self.next(self.gather)

    @step
    def gather(self) -> None:
        from training_patterns.pipeline_training import steps

        settings = PipelineSettings()
        self.ran = [*self.ran, steps.begin(settings, "gather")]
        self.rows = steps.gather(settings)
        self.next(self.validate)

    @step
    def validate(self) -> None:
        from training_patterns.pipeline_training import steps

        settings = PipelineSettings()
        self.ran = [*self.ran, steps.begin(settings, "validate")]
        self.valid = steps.validate(self.rows, settings)
        self.counts = steps.counts(self.rows, self.valid)
        self.rejected = self.valid.rejected
        self.next(self.preprocess)

    @step
    def preprocess(self) -> None:
        from training_patterns.pipeline_training import steps

        self.ran = [*self.ran, steps.begin(PipelineSettings(), "preprocess")]
        self.dataset, self.data_version = steps.preprocess(self.valid)
        self.next(self.end)

    @step
    def end(self) -> None:
        print(  # noqa: T201 (Metaflow logs a step's stdout under the step's name)
            f"data version {self.data_version[:12]}: {self.counts['rows_valid']} rows valid, "
            f"{self.counts['rows_invalid']} invalid"
        )


if __name__ == "__main__":
    DataRefreshFlow()  # type: ignore[no-untyped-call]
