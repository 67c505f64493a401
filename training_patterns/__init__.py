"""Training patterns: how models are trained, recorded, searched for and registered."""

import os

# MLflow's usage telemetry, on unless switched off before mlflow is imported, would send events
# off the machine, and its thread sets and unsets an entry of os.environ while other threads
# iterate it (a KeyError inside requests, seen in a search worker). Every module of these
# patterns is imported after this package, so this is before any of them imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
