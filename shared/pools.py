"""Liveness of a connection pool: one that holds connections no call holds can never give them
back, and once all are held so, it can never send again. A restart is the only cure, so the
service's /health (liveness) fails with the reason, for the orchestrator to restart it.

    leaks = LeakWatch("the predictor's client", size=100)
    create_service(..., liveness={"predictor client": lambda: leaks.check(busy - calls_holding)})
"""

import time


class LeakWatch:
    """Says a pool leaks once connections held by no call have stayed so for `grace_seconds`.

    A call may hold its connection for a moment after it counts itself done, so a count above
    zero is a leak only when it never drops to zero during the grace period.
    """

    def __init__(self, name: str, size: int, grace_seconds: float = 30.0) -> None:
        self.name = name
        self.size = size
        self.grace_seconds = grace_seconds
        self._seen_at: float | None = None

    def check(self, leaked: int) -> str | None:
        """None while the pool can send; the reason once a leak has outlived the grace period."""
        if leaked <= 0:
            self._seen_at = None
            return None
        now = time.monotonic()
        if self._seen_at is None:
            self._seen_at = now
        if now - self._seen_at < self.grace_seconds:
            return None
        return (
            f"{self.name}: {leaked} of {self.size} pooled connections held by no call for "
            f"{now - self._seen_at:.0f} s; restart to get them back"
        )
