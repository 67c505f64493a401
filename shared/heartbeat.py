"""Liveness of a service that listens on no port (a queue worker, a sink): a heartbeat file.

The service beats from the loop that does its work, after a step that proved it can work (the
worker's consumer reached its broker, the sink drained a batch), never from a side thread: a
thread would beat on while the work is stuck. A loop that stops, stalls or cannot reach what it
needs stops beating, and the probe fails once the file is older than three beats:

    python -m shared.heartbeat ASYNCHRONOUS_WORKER_  # a compose healthcheck: exit 0 healthy, 1 not

The argument is the service's settings prefix: the beat interval is `<PREFIX>HEARTBEAT_SECONDS`
(default 5), and the file's name is made from the host name and every `<PREFIX>*` variable, so
replicas, and copies of a pattern run side by side on one machine (local mode, parallel tests),
never share a file, while the probe, run with the service's environment, finds its own.
Standard library only: the probe runs in slim images.
"""

import hashlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SECONDS = 5.0
MISSED_BEATS = 3  # a probe fails after this many beats missed in a row


def heartbeat_file(prefix: str) -> Path:
    scope = sorted((k, v) for k, v in os.environ.items() if k.startswith(prefix))
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    digest = hashlib.sha256(repr((prefix, host, scope)).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"heartbeat-{prefix.strip('_').lower()}-{digest}"


def beat_seconds(prefix: str) -> float:
    return float(os.environ.get(f"{prefix}HEARTBEAT_SECONDS", DEFAULT_SECONDS))


class Heartbeat:
    """Beat it from the work loop; it touches the file at most twice per interval.

    `seconds` is the service's setting, which the probe reads from `<PREFIX>HEARTBEAT_SECONDS`.
    """

    def __init__(self, prefix: str, seconds: float) -> None:
        self.path = heartbeat_file(prefix)
        self.seconds = seconds
        self._last = float("-inf")

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.seconds / 2:
            self.path.touch()
            self._last = now


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(
            "usage: python -m shared.heartbeat SETTINGS_PREFIX (e.g. ASYNCHRONOUS_WORKER_)\n"
        )
        return 2
    prefix = argv[1]
    path, limit = heartbeat_file(prefix), MISSED_BEATS * beat_seconds(prefix)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        sys.stderr.write(f"no heartbeat yet ({path})\n")
        return 1
    if age >= limit:
        sys.stderr.write(f"last heartbeat {age:.1f}s ago, more than {limit:g}s ({path})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
