"""The load test's targets: web single's app (serving_patterns/web_single/app.py), unchanged,
under the settings of one target or the other. compose.yaml runs `single` with one uvicorn worker
and `multi` with LOADING_TEST_MULTI_WORKERS of them.

    uvicorn qa_patterns.loading_test.server:create_multi --factory --workers 2 --port 8231
"""

from fastapi import FastAPI

from qa_patterns.loading_test.settings import MultiSettings, SingleSettings
from serving_patterns.web_single.app import create_app


def create_single() -> FastAPI:
    return create_app(SingleSettings())


def create_multi() -> FastAPI:
    return create_app(MultiSettings())
