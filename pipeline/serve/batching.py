"""Dynamic micro-batching: concurrent classify requests share one forward pass per task.

Each request is queued as one *item* (its texts and tasks). One asyncio task takes the
first waiting item, adds every item already waiting, and waits up to ``max_wait_ms``
for more while the batch has fewer than ``max_batch_size`` texts; then it runs the
batch on the model thread (``run_batch``: tokenize, one forward pass per task, off the
event loop) and hands every request its own rows. While a batch runs, new requests queue
up, so under load the next batch forms without waiting at all.

An item is never split: one request with more texts than ``max_batch_size`` runs as
a batch of its own (the classifier still pads in chunks of its ``batch_size``).
``max_queue`` bounds the texts waiting: beyond it a request is refused (E332, 503).
``stop()`` lets the queued items finish, then ends the task (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass
class BatchItem:
    """One request's share of a batch: its rows (tokenized texts) and the tasks it asked for."""

    rows: list[Any]
    tasks: tuple[str, ...]
    future: asyncio.Future = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.rows)


@dataclass
class BatchStats:
    """Counters of the batcher (``GET /v1/stats``): how much merging happened."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    merged_batches: int = 0  # batches that served more than one request
    max_batch_texts: int = 0
    max_batch_requests: int = 0
    busy_seconds: float = 0.0
    refused: int = 0

    def to_json(self) -> dict[str, Any]:
        mean = self.texts / self.batches if self.batches else 0.0
        return {
            "requests": self.requests,
            "texts": self.texts,
            "batches": self.batches,
            "merged_batches": self.merged_batches,
            "mean_batch_texts": round(mean, 2),
            "max_batch_texts": self.max_batch_texts,
            "max_batch_requests": self.max_batch_requests,
            "busy_seconds": round(self.busy_seconds, 3),
            "refused": self.refused,
        }


class MicroBatcher:
    """Merges concurrent :meth:`submit` calls into batches run by ``run_batch`` on ``executor``.

    ``run_batch(rows, tasks)`` gets every row of the batch and, per row, the tasks it
    needs; it returns one result per row, in order.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any], list[tuple[str, ...]]], list[Any]],
        *,
        executor: Executor,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
    ) -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._items: deque[BatchItem] = deque()
        self._queued_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="jpipe-batcher")

    async def stop(self) -> None:
        """Finish every queued item, then end the batching task."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    # ------------------------------------------------------------ requests
    async def submit(self, rows: list[Any], tasks: tuple[str, ...]) -> list[Any]:
        """The results of ``rows`` (one per row), computed in a batch with whatever else is queued."""
        if not rows:
            return []
        if self._task is None or self._stopping:
            raise ModelError("E330", "The server is shutting down or not started.", hint="Retry in a moment.")
        if self._queued_texts + len(rows) > self.max_queue and self._queued_texts > 0:
            self.stats.refused += 1
            raise ModelError(
                "E332",
                f"{self._queued_texts} texts already wait for the classifier (limit {self.max_queue}).",
                hint="Retry in a moment, or send fewer texts at once (serve.max_queue sets the limit).",
            )
        item = BatchItem(rows=rows, tasks=tasks, future=asyncio.get_running_loop().create_future())
        self._items.append(item)
        self._queued_texts += item.size
        self._wakeup.set()
        return await item.future

    # ------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        while True:
            if not self._items:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            await self._run(batch)

    async def _collect(self) -> list[BatchItem]:
        """The next batch: the first item, every item waiting, and those arriving within ``max_wait``."""
        batch = [self._take()]
        size = batch[0].size
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            if self._items:
                if size + self._items[0].size > self.max_batch_size:
                    break
                item = self._take()
                batch.append(item)
                size += item.size
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return batch

    def _take(self) -> BatchItem:
        item = self._items.popleft()
        self._queued_texts -= item.size
        return item

    async def _run(self, batch: list[BatchItem]) -> None:
        rows = [row for item in batch for row in item.rows]
        tasks = [item.tasks for item in batch for _ in item.rows]
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, rows, tasks)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self._count(batch, len(rows), time.perf_counter() - started)
        start = 0
        for item in batch:
            if not item.future.done():  # a cancelled request (client gone) is skipped
                item.future.set_result(results[start : start + item.size])
            start += item.size

    def _count(self, batch: list[BatchItem], texts: int, seconds: float) -> None:
        stats = self.stats
        stats.requests += len(batch)
        stats.texts += texts
        stats.batches += 1
        stats.merged_batches += len(batch) > 1
        stats.max_batch_texts = max(stats.max_batch_texts, texts)
        stats.max_batch_requests = max(stats.max_batch_requests, len(batch))
        stats.busy_seconds += seconds
