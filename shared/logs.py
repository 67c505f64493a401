"""JSON-lines logging that carries the id of the request being served."""

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

# Set per request by the service middleware, read by every log record and outgoing HTTP call.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate
        return True


class _JsonLines(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs: one JSON object per record, on stdout."""


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record, uvicorn's and celery's included, to stdout as one JSON object.

    Once per process: the first call configures, later ones (another app made in the same
    process, a test's) change nothing. It adds its handler to the root logger and removes
    none, so a handler someone else put there (pytest's caplog) keeps its records.
    """
    root = logging.getLogger()
    if any(isinstance(h, _JsonLines) for h in root.handlers):
        return
    handler = _JsonLines(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        )
    )
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The service middleware writes the access log (with the request id) when it is asked to.
    logging.getLogger("uvicorn.access").disabled = True
    # One line per outgoing call is noise; failures still surface as warnings.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
