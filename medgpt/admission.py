"""A bounded FIFO admission queue in front of an engine: at most ``max_concurrent`` requests run, at most
``max_waiting`` wait for their turn in arrival order, and any other request is refused at once.

Why it looks like this:
- Without a bound, every request parks a thread on the engine's lock until it times out; a refusal now, with a
  wait to retry after (:class:`~medgpt.engines.Overloaded`), is worth more to a client than a timeout later.
- A request is also refused at once when its estimated wait (the requests ahead of it times the mean of recent
  service times) would pass its deadline: it would only time out in the queue.
- Turns are handed over, not raced for: a finishing request passes its slot straight to the oldest waiter, and a
  newcomer may start at once only when nobody waits. So no request ever waits behind one that arrived after it.
- A waiter that is cancelled (client gone, deadline) leaves the queue at once; if its turn came in the same
  instant, the turn goes on to the next waiter instead of being lost.

Pure asyncio and no HTTP: which status a refusal becomes is the gateway's business. The slot is not tied to the
task that took it, so a streamed answer can take it while the response is being prepared and give it back from
the task that sends the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from medgpt.engines.base import GenerationTimeout, Overloaded
from medgpt.settings import Admission as AdmissionSettings

#: Seconds one request is assumed to hold the engine before any has been measured: a few hundred tokens on a
#: small CPU (the default answer is 384 tokens at roughly 20 a second).
PRIOR_SERVICE_SECONDS = 20.0
#: How many recent service times the running mean is taken over.
SERVICE_WINDOW = 16


class Slot:
    """One admitted request's turn. :meth:`release` gives it back; calling it again does nothing."""

    def __init__(self, admission: Admission, waited: float) -> None:
        self._admission = admission
        self._started = admission.clock()
        self._released = False
        #: Seconds this request waited in the queue before its turn (0 when it started at once).
        self.waited = waited

    def release(self, served: bool = True) -> None:
        """Give the turn back. ``served``: the request ran to its end, so the time it held the slot is a service
        time worth learning from; a request that failed early (an unknown model) or was cut off is not."""
        if self._released:
            return
        self._released = True
        self._admission._release(self._admission.clock() - self._started if served else None)


class Admission:
    """The queue of one engine. Safe for concurrent tasks of one event loop (it takes no thread locks)."""

    def __init__(
        self,
        max_concurrent: int = 1,
        max_waiting: int = 8,
        *,
        prior_seconds: float = PRIOR_SERVICE_SECONDS,
        window: int = SERVICE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1 or max_waiting < 0 or prior_seconds <= 0:
            raise ValueError("max_concurrent >= 1, max_waiting >= 0 and prior_seconds > 0 are needed")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        #: The clock deadlines are read on (``time.monotonic`` unless a test says otherwise).
        self.clock = clock
        self._prior = prior_seconds
        self._service: deque[float] = deque(maxlen=window)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._running = 0
        #: Requests refused so far (queue full or deadline out of reach).
        self.refused = 0

    @classmethod
    def from_settings(cls, settings: AdmissionSettings, concurrency: int = 1, **kw) -> Admission:
        """``concurrency``: requests the engine decodes at once, taken when ``settings.max_concurrent`` is None."""
        return cls(settings.max_concurrent or concurrency, settings.max_waiting, **kw)

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn now."""
        return len(self._waiters)

    @property
    def running(self) -> int:
        """Requests holding a turn now (never more than ``max_concurrent``)."""
        return self._running

    @property
    def service_seconds(self) -> float:
        """The mean of the recent service times, or the prior before any was measured."""
        return sum(self._service) / len(self._service) if self._service else self._prior

    def estimated_wait(self) -> float:
        """Seconds a request arriving now would wait: 0 when a turn is free and nobody waits, else a service time
        for each round of ``max_concurrent`` requests ahead of it, counting the round now running."""
        if self._running < self.max_concurrent and not self._waiters:
            return 0.0
        return (len(self._waiters) // self.max_concurrent + 1) * self.service_seconds

    async def acquire(self, deadline: float | None = None) -> Slot:
        """Wait for a turn in arrival order and return it (release it with :meth:`Slot.release`).

        ``deadline`` (on :attr:`clock`): the request's end; refused at once (:class:`Overloaded`) when the
        estimated wait would pass it, and :class:`GenerationTimeout` when it passes in the queue anyway.
        :class:`Overloaded` too when ``max_waiting`` requests already wait."""
        arrived = self.clock()
        if self._running < self.max_concurrent and not self._waiters:
            self._running += 1
            return Slot(self, 0.0)
        if len(self._waiters) >= self.max_waiting:
            self.refused += 1
            raise Overloaded(
                f"the server is busy: {self._running} running and {len(self._waiters)} waiting, the most it queues",
                retry_after=self.service_seconds / self.max_concurrent,
            )
        wait = self.estimated_wait()
        if deadline is not None and arrived + wait > deadline:
            self.refused += 1
            raise Overloaded(
                f"the server is busy: the wait for a turn (about {wait:.0f} s) would pass the request's deadline",
                retry_after=arrived + wait - deadline,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if deadline is None:
                await turn
            else:
                async with asyncio.timeout(deadline - arrived):
                    await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._release(None)  # the turn came just as the waiter gave up: it goes to the next one
            else:
                turn.cancel()
                if turn in self._waiters:  # a release may already have skipped it as done
                    self._waiters.remove(turn)
            if isinstance(exc, TimeoutError):
                raise GenerationTimeout(
                    f"no turn within the request's deadline ({deadline - arrived:.0f} s in the queue)"
                ) from None
            raise
        return Slot(self, self.clock() - arrived)

    @asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[Slot]:
        """``async with admission.slot(deadline):`` a turn for the block; its time is learned from only when
        the block ends without an exception."""
        turn = await self.acquire(deadline)
        try:
            yield turn
        except BaseException:
            turn.release(served=False)
            raise
        turn.release()

    def _release(self, service: float | None) -> None:
        if service is not None:
            self._service.append(service)
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the turn passes on; the running count stays the same
                return
        self._running -= 1
