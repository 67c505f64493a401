"""Adaptive micro-batching: concurrent requests' rows gathered into one model call.

As Triton's dynamic batcher and BentoML's adaptive batching do, and without a fixed window:
while the model is idle a request is sent to it at once, alone; while the model is busy the
requests that arrive wait in a queue, and the next call takes all of them that fit in
max_batch_size rows. So a lone request pays no wait, and the batches grow with the load.

- A request's rows are never split: a request with more rows than max_batch_size runs alone.
- Each caller gets exactly its own rows' outputs, in order (row offsets into the batch).
- Bounded: a full queue (max_batch_queue requests), or a wait that would pass max_batch_wait_ms
  (estimated from the recent batches when the request comes, checked again when its batch is
  formed), is an Overloaded at once, which the services answer 503 with Retry-After.
- A caller cancelled while it waits, or whose HTTP client has gone away
  (shared.service.client_gone_var), has its rows dropped; nobody else's answer changes.
- A batch the model fails on is run again request by request, so that only the request whose
  rows the model cannot take gets the error.
- The model runs in a thread of its own (onnxruntime releases the GIL), so the event loop goes
  on taking requests, and queueing them, while it runs.

/metrics: model_batch_rows (histogram), model_batch_queue_wait_seconds (histogram),
model_batch_queue_depth (gauge, requests waiting), labelled by service.
"""

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Gauge, Histogram

from shared.service import ClientGone, client_gone_var

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray[Any, Any]]
Outputs = dict[str, np.ndarray[Any, Any]]

BATCH_ROWS = Histogram(
    "model_batch_rows",
    "Rows per model call when micro-batching",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
QUEUE_WAIT = Histogram(
    "model_batch_queue_wait_seconds",
    "Time a request waited for its batch's model call to start",
    ["service"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
QUEUE_DEPTH = Gauge("model_batch_queue_depth", "Requests waiting for a model call", ["service"])


class Overloaded(Exception):
    """The request cannot be served within the bounds: answer 503 with Retry-After."""


@dataclass
class _Waiting:
    feeds: Feeds
    rows: int
    enqueued: float
    answer: asyncio.Future[Outputs]
    gone: Callable[[], Awaitable[bool]] | None  # its HTTP client has left


class MicroBatcher:
    """Gather calls of `run` (inputs -> every output, rows along the first axis) into batches."""

    def __init__(
        self,
        run: Callable[[Feeds], Outputs],
        max_batch_size: int,
        max_wait_seconds: float,
        max_queue: int,
        service: str = "model",
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_queue = max_queue
        self._queue: deque[_Waiting] = deque()
        self._busy = False  # a batch is with the model (or being checked for it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batches: queue.SimpleQueue[list[_Waiting] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Seconds per row of the recent batches (an exponential average): the wait estimate.
        self._seconds_per_row = 0.0
        self._rows_metric = BATCH_ROWS.labels(service)
        self._wait_metric = QUEUE_WAIT.labels(service)
        self._depth_metric = QUEUE_DEPTH.labels(service)

    async def __call__(self, feeds: Feeds) -> Outputs:
        """The outputs for these inputs' rows, computed in a batch with other callers'."""
        if self._thread is None:  # started here: the loop is this call's
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._model, name="model", daemon=True)
            self._thread.start()
        rows = len(next(iter(feeds.values())))
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{len(self._queue)} requests already wait for the model")
        estimate = (sum(w.rows for w in self._queue) + rows) * self._seconds_per_row
        if self._busy and estimate > self.max_wait_seconds:
            raise Overloaded(
                f"the model would start on this request in about {estimate * 1000:.0f} ms, "
                f"more than the {self.max_wait_seconds * 1000:g} ms allowed"
            )
        assert self._loop is not None
        waiting = _Waiting(
            feeds, rows, time.perf_counter(), self._loop.create_future(), client_gone_var.get()
        )
        self._queue.append(waiting)
        if self._busy:
            self._depth_metric.set(len(self._queue))
        else:  # idle: this one goes to the model now, with whatever else is queued
            self._busy = True
            self._send(self._next_batch())
        # A caller cancelled here cancels its future: its batch skips it.
        return await waiting.answer

    async def close(self) -> None:
        if self._thread is not None:
            self._batches.put(None)
            await asyncio.to_thread(self._thread.join, 5)
        for waiting in self._queue:
            if not waiting.answer.done():
                waiting.answer.set_exception(Overloaded("the service is stopping"))

    def _send(self, batch: list[_Waiting]) -> None:
        """Give a batch to the model's thread (in the loop), or go idle if it is empty."""
        self._depth_metric.set(len(self._queue))
        if not batch:
            self._busy = False
            return
        started = time.perf_counter()
        for waiting in batch:
            self._wait_metric.observe(started - waiting.enqueued)
        self._rows_metric.observe(sum(w.rows for w in batch))
        self._batches.put(batch)

    def _model(self) -> None:
        """The model's thread: run each batch, hand the answers back to the loop."""
        while (batch := self._batches.get()) is not None:
            started = time.perf_counter()
            answers = self._answers(batch)
            took = time.perf_counter() - started
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._done, batch, answers, took)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                return

    def _done(self, batch: list[_Waiting], answers: list[Outputs | Exception], took: float) -> None:
        """In the loop: answer the batch's callers, then send the next batch."""
        per_row = took / sum(w.rows for w in batch)
        self._seconds_per_row = (
            0.8 * self._seconds_per_row + 0.2 * per_row if self._seconds_per_row else per_row
        )
        for waiting, answer in zip(batch, answers, strict=True):
            if waiting.answer.done():  # cancelled while the model ran
                continue
            if isinstance(answer, Exception):
                waiting.answer.set_exception(answer)
            else:
                waiting.answer.set_result(answer)
        batch = self._next_batch()
        if any(w.gone is not None for w in batch):
            # Those that waited may have lost their clients meanwhile: asked without waiting.
            asyncio.ensure_future(self._send_unless_gone(batch))
        else:
            self._send(batch)

    async def _send_unless_gone(self, batch: list[_Waiting]) -> None:
        while batch:
            kept = []
            for waiting in batch:
                if waiting.gone is not None and await waiting.gone():
                    waiting.answer.set_exception(ClientGone("the client went away while waiting"))
                else:
                    kept.append(waiting)
            if kept:
                break
            batch = self._next_batch()
        self._send(kept if batch else [])

    def _next_batch(self) -> list[_Waiting]:
        """The requests that fit in max_batch_size rows, oldest first; those cancelled or past
        their wait are taken out (the latter answered Overloaded)."""
        batch: list[_Waiting] = []
        rows = 0
        now = time.perf_counter()
        while self._queue:
            waiting = self._queue[0]
            if waiting.answer.done():  # cancelled: its caller has gone
                self._queue.popleft()
                continue
            if now - waiting.enqueued > self.max_wait_seconds:
                self._queue.popleft()
                waiting.answer.set_exception(
                    Overloaded(
                        f"waited more than {self.max_wait_seconds * 1000:g} ms for the model"
                    )
                )
                continue
            if batch and rows + waiting.rows > self.max_batch_size:
                break
            self._queue.popleft()
            batch.append(waiting)
            rows += waiting.rows
        return batch

    def _answers(self, batch: list[_Waiting]) -> list[Outputs | Exception]:
        """Each request's outputs (in the model's thread): one call for the batch, or, if the
        model fails on it, one call per request, so that the failure stays with its rows."""
        if len(batch) == 1:
            return [self._run_one(batch[0].feeds)]
        names = list(batch[0].feeds)
        feeds = {name: np.concatenate([w.feeds[name] for w in batch]) for name in names}
        try:
            outputs = self.run(feeds)
        except Exception:
            logger.info("a batch of %d requests failed: running them one by one", len(batch))
            return [self._run_one(w.feeds) for w in batch]
        answers: list[Outputs | Exception] = []
        start = 0
        for waiting in batch:
            end = start + waiting.rows
            answers.append({name: value[start:end] for name, value in outputs.items()})
            start = end
        return answers

    def _run_one(self, feeds: Feeds) -> Outputs | Exception:
        try:
            return self.run(feeds)
        except Exception as exc:
            return exc
