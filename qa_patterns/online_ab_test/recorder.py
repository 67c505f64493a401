"""Online A/B test pattern, the recorder: the model servers' predictions, from the inference
log's Redis stream into the inferences table (shared/inference_log.py's loop, this pattern's
settings). Run one or more: they share the stream in a consumer group.

    .venv/bin/python -m qa_patterns.online_ab_test.recorder
"""

from qa_patterns.online_ab_test.settings import RecorderSettings
from shared.inference_log import main

if __name__ == "__main__":
    main(RecorderSettings(), "ONLINE_AB_TEST_RECORDER_", "online-ab-test-recorder")
