"""The antipattern: the same server, grown out of the training code.

    .venv/bin/uvicorn \\
        training_patterns.antipatterns.training_code_in_serving.bad_server:create_app \\
        --factory --port 8161      # in the dev venv only: it needs the training libraries

It answers exactly as server.py does, but it reaches the preprocessing through the training
module (`train.preprocess`, where it first lived), so importing it imports scikit-learn,
skl2onnx and Optuna; and its settings grew from the trainer's, so the serving process holds the
internal warehouse's URL and password. With the serving image's dependency set alone it does not
even start (tests/test_isolation.py), and an image that runs it must carry the training stack.
"""

from fastapi import FastAPI

from training_patterns.antipatterns.training_code_in_serving import train
from training_patterns.antipatterns.training_code_in_serving.server import build_app
from training_patterns.antipatterns.training_code_in_serving.settings import BadServerSettings


def create_app(settings: BadServerSettings | None = None) -> FastAPI:
    return build_app(
        "training-code-in-serving-bad-server", settings or BadServerSettings(), train.preprocess
    )
