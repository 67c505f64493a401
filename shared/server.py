"""uvicorn's fast HTTP protocol (httptools), with the two bounds on request heads it lacks.

uvicorn closes an idle keep-alive connection (--timeout-keep-alive) but does not bound how long
a client may take to send a request's line and headers, nor (with httptools) how large they may
be: a client that sends a byte every few seconds holds its connection for as long as it likes,
and a thousand such clients hold a thousand. Every service here runs with this protocol:

    uvicorn serving_patterns.web_single.app:create_app --factory --http shared.server:Protocol

- a request head not complete within HTTP_HEADER_TIMEOUT_SECONDS (default 10) of the
  connection, or of the first byte of a keep-alive connection's next request, gets 408 and the
  connection is closed;
- a request head over HTTP_MAX_HEADER_BYTES (default 65536) gets 431 and the connection closed.

The body has its own deadline and size limit, in shared.service's middleware.
"""

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = float(os.environ.get("HTTP_HEADER_TIMEOUT_SECONDS", "10"))
MAX_HEADER_BYTES = int(os.environ.get("HTTP_MAX_HEADER_BYTES", "65536"))


class _Refused(Exception):
    pass


class Protocol(HttpToolsProtocol):
    header_timeout_seconds = HEADER_TIMEOUT_SECONDS
    max_header_bytes = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()  # a client that connects and sends nothing is bounded too

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_received()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # what a refused client still sends is not read
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the parser stopped because of our refusal: it is answered
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_head()

    def on_url(self, url: bytes) -> None:
        self._count(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(name, value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_received()
        super().on_headers_complete()

    def _await_head(self) -> None:
        self._head_received()
        self._head_deadline = self.loop.call_later(
            self.header_timeout_seconds,
            self._refuse,
            408,
            f"request head not received within {self.header_timeout_seconds:g} s",
        )

    def _head_received(self) -> None:
        self._head_bytes = 0
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _count(self, *parts: bytes) -> None:
        self._head_bytes += sum(len(part) for part in parts)
        if self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"request head larger than {self.max_header_bytes} bytes")
            raise _Refused  # stops the parser; httptools hands it to uvicorn as a parser error

    def _refuse(self, status: int, message: str) -> None:
        self._head_received()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()
