"""Offline only (antipattern), the recorder: online_ab_test's (shared/inference_log.py's loop),
with this pattern's settings: the models' predictions, from the Redis stream into the
inferences table, where the guard joins them with the client events.

    .venv/bin/python -m qa_patterns.antipatterns.offline_only.recorder
"""

from qa_patterns.antipatterns.offline_only.settings import RecorderSettings
from shared.inference_log import main

if __name__ == "__main__":
    main(RecorderSettings(), "OFFLINE_ONLY_RECORDER_", "offline-only-recorder")
