"""Group commit for the hot decisions on PostgreSQL: the requests that arrive while a batch is in the
database are decided together in the next one (one round trip and one commit for all of them).

There is no timer: a request that finds no batch running starts one at once, so a lone request waits for
nothing; under load the batches grow by themselves to what arrived during the last one. Two requests for
the same subject (the same user) never share a batch: the second waits for the next, so each decision reads
what the one before it wrote and the replay, lock-out and cap rules hold exactly as one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import anyio

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Decides items with ``decide_many`` (in a thread; one outcome per item, a result or the exception to
    raise for it), at most ``max_size`` of them and one per ``subject`` in a batch, ``in_flight`` batches at a
    time. Belongs to the event loop it is first used on."""

    def __init__(
        self,
        decide_many: Callable[[list[Item]], list[Result | Exception]],
        subject: Callable[[Item], Hashable],
        *,
        limiter: anyio.CapacityLimiter,
        max_size: int,
        in_flight: int,
    ) -> None:
        self._decide_many, self._subject, self._limiter = decide_many, subject, limiter
        self.max_size, self.in_flight = max_size, in_flight
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def decide(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._running < self.in_flight:
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The next batch: the waiting items in order of arrival, the first one of each subject."""
        taken: list[tuple[Item, asyncio.Future[Result]]] = []
        later: list[tuple[Item, asyncio.Future[Result]]] = []
        subjects: set[Hashable] = set()
        for entry in self._waiting:
            if entry[1].done():
                continue  # its request went away (the client disconnected)
            subject = self._subject(entry[0])
            if len(taken) >= self.max_size or subject in subjects:
                later.append(entry)
            else:
                subjects.add(subject)
                taken.append(entry)
        self._waiting = later
        return taken

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._waiting:
                batch = self._take()
                if not batch:
                    break
                outcomes: list[Any]
                try:
                    outcomes = await anyio.to_thread.run_sync(
                        self._decide_many, [item for item, _ in batch], limiter=self._limiter
                    )
                except Exception as exc:  # noqa: BLE001 - the database failed the batch: every request in it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        finally:
            self._running -= 1
            for _, future in batch:  # cancelled (the loop is closing) before its outcome came back
                if not future.done():
                    future.cancel()
