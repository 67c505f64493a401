"""Helpers for the patterns' end-to-end tests: start a pattern, wait with a deadline."""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from shared.localmode import LocalPattern, NoPostgres

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


@contextmanager
def pattern_running(folder: str | Path, **variables: str) -> Iterator[LocalPattern]:
    """The pattern's compose file run through local mode, on free ports, with its own Redis.

    `variables` are what a shell would export for compose's ${VAR} substitution. REDIS_URL is
    left out unless given, so each test gets a private redis-server it may restart or stop.
    A pattern that needs PostgreSQL is skipped where none answers.
    """
    shell = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    pattern = LocalPattern(folder, ports="free", variables={**shell, **variables})
    try:
        pattern.start()
    except NoPostgres as exc:
        pattern.stop()
        pytest.skip(str(exc))
    except BaseException:
        pattern.stop()
        raise
    try:
        yield pattern
    finally:
        pattern.stop()
