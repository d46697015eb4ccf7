"""The model's worker pool: model calls leave the event loop (health checks answer under load), the queue is
bounded (503 when full) and every call has a deadline (504)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import HTTPException

T = TypeVar("T")


class ModelWorkers:
    """`await workers.run(fn, *args)` runs fn in one of `workers` threads.

    A call counts against `max_queued` until its work has finished, also after its deadline passed: a torch
    call cannot be interrupted, so a timed-out request still occupies a worker and the queue says so."""

    def __init__(self, workers: int, max_queued: int, timeout_seconds: float) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="conceptseg-model")
        self.max_queued, self.timeout_seconds = max_queued, timeout_seconds
        self.pending = 0  # only touched on the event loop

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.pending >= self.max_queued:
            raise HTTPException(503, f"the server is busy ({self.pending} requests queued or running, limit "
                                     f"{self.max_queued}); retry later")
        loop = asyncio.get_running_loop()
        self.pending += 1
        future = loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))
        future.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_seconds)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the model did not answer within {self.timeout_seconds:g} s") from None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget (clean-up work that must run in order with model calls)."""
        self.pool.submit(fn, *args)

    def _finished(self, future: asyncio.Future) -> None:
        self.pending -= 1
        if not future.cancelled():
            future.exception()  # retrieved, so that an abandoned failure is not reported as never retrieved

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
