"""Liveness of the services that listen on no port (worker, sink): a heartbeat file.

The service touches its file every few seconds from a thread; the compose healthcheck runs
`python -m serving_patterns.asynchronous.alive SERVICE` (standard library only), which fails when
the file is older than three beats. The file name carries the Redis URL and the host name, so
replicas, and patterns run side by side on one machine (local mode, tests), never share one.
"""

import hashlib
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path


def heartbeat_file(service: str) -> Path:
    prefix = f"ASYNC_{service.upper()}_"
    redis_url = os.environ.get(f"{prefix}REDIS_URL", "")
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    digest = hashlib.sha256(f"{redis_url} {host}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"asynchronous-{service}-{digest}.alive"


def start_heartbeat(service: str, seconds: float) -> None:
    """Touch the service's heartbeat file now and every `seconds` from a daemon thread."""
    path = heartbeat_file(service)
    path.touch()

    def beat() -> None:
        while True:
            time.sleep(seconds)
            path.touch()

    threading.Thread(target=beat, name=f"{service}-heartbeat", daemon=True).start()


def main() -> int:
    service = sys.argv[1]
    seconds = float(os.environ.get(f"ASYNC_{service.upper()}_HEARTBEAT_SECONDS", "5"))
    try:
        age = time.time() - heartbeat_file(service).stat().st_mtime
    except FileNotFoundError:
        return 1
    return 0 if age < 3 * seconds else 1


if __name__ == "__main__":
    sys.exit(main())
