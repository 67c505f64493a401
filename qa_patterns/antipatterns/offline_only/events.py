r"""Offline only (antipattern), the events collector: online_ab_test's, with this pattern's
settings. What a user did after a prediction (a conversion, keyed by the prediction's request
id) goes into the database the predictions are recorded in: the KPI's log.

    .venv/bin/uvicorn qa_patterns.antipatterns.offline_only.events:create_app --factory --port 8253
"""

from fastapi import FastAPI

from qa_patterns.antipatterns.offline_only.settings import EventsSettings
from qa_patterns.online_ab_test import events


def create_app(settings: EventsSettings | None = None) -> FastAPI:
    return events.create_app(settings or EventsSettings())
