"""Concurrent queries answered together: one worker thread owns the model and, each time it is free, takes every
query waiting (up to `max_batch`) and answers them as one batch (SearchEngine.search_many encodes their images in one
batch and their texts in another).

The batches form by themselves: while the worker computes one, the next requests queue, so a lone query waits for
nothing (no timer holds it back), and under load each batch is as large as the load makes it. A fixed wait would
add its length to every query when the server is quiet and help little when it is busy, since the worker is busy
then anyway. The model runs in one thread at a time, as torch on a shared model should; the event loop only parses
requests and waits on futures.

The engine is asked for at the start of each batch (`current`), so a server that follows its index
(pipeline/search/live.py) answers each batch wholly from one version.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from pipeline.errors import PipelineError
from pipeline.search.engine import Answer, Query, SearchEngine

MAX_BATCH = 64


BatchObserver = Callable[[int, dict[str, float]], None]  # (queries in the batch, seconds per phase)


class QueryBatcher:
    """Queries in, answers out, through one worker thread that answers whatever is waiting as one batch."""

    def __init__(self, current: Callable[[], SearchEngine], max_batch: int = MAX_BATCH,
                 observe: BatchObserver | None = None):
        self.current, self.max_batch, self.observe = current, max_batch, observe
        self.waiting: queue.SimpleQueue[tuple[Query, Future]] = queue.SimpleQueue()
        self.batches = self.queries = self.largest = 0  # what /health reports: how much batching happened
        threading.Thread(target=self._work, name="fashion-cir search", daemon=True).start()

    def submit(self, query: Query) -> Future:
        """A future that holds the query's Answer, or raises its PipelineError."""
        future: Future = Future()
        self.waiting.put((query, future))
        return future

    def _work(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            self.batches, self.queries = self.batches + 1, self.queries + len(batch)
            self.largest = max(self.largest, len(batch))
            phases: dict[str, float] = {}
            try:
                answers: list[Answer | PipelineError] = self.current().search_many([query for query, _ in batch],
                                                                                   phases)
            except Exception as error:  # a bug: every query of the batch fails with it, the worker carries on
                answers = [error] * len(batch)  # type: ignore[list-item]
            if self.observe is not None:
                self.observe(len(batch), phases)
            for (_, future), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
