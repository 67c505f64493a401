r"""Offline only (antipattern), the proxy: online_ab_test's, with this pattern's settings.

It splits POST /predict between the current model (A) and the candidate (B) by B's share,
sticky by X-User-ID, and names the variant in each answer. B's share is 0 at start (the
candidate not released); PUT /weights is the release's knob (release.py: 100 for the
offline-only path, 10 for the A/B test) and the kill switch (0: every request to A, from the
next one on, with no restart). POST /events passes a user's conversion to the events collector.

    .venv/bin/uvicorn qa_patterns.antipatterns.offline_only.proxy:create_app --factory --port 8250
"""

from fastapi import FastAPI

from qa_patterns.antipatterns.offline_only.settings import ProxySettings
from qa_patterns.online_ab_test import proxy


def create_app(settings: ProxySettings | None = None) -> FastAPI:
    return proxy.create_app(settings or ProxySettings())
