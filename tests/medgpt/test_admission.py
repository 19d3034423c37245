"""The admission queue under real asyncio concurrency: turns in arrival order, refusals at once (queue full or a
deadline out of reach), cancelled waiters leaving without blocking anyone, and never more than ``max_concurrent``
running."""

import asyncio
import random
import time

import pytest

from medgpt.admission import Admission
from medgpt.engines import GenerationTimeout, Overloaded


async def _queued(admission: Admission, n: int) -> None:
    """Until ``n`` requests wait (each waiter enqueues on its first step)."""
    for _ in range(100):
        if admission.waiting == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{admission.waiting} waiting, expected {n}")


def test_turns_come_in_arrival_order():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=10)
        order: list[int] = []
        first = await admission.acquire()

        async def request(i: int) -> None:
            async with admission.slot():
                order.append(i)
                await asyncio.sleep(0.005)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(request(i)))
            await _queued(admission, i + 1)
        first.release()
        # A newcomer arriving the instant the turn is handed over queues behind the six, not in front of them.
        tasks.append(asyncio.create_task(request(6)))
        await asyncio.gather(*tasks)
        return order, admission

    order, admission = asyncio.run(main())
    assert order == list(range(7))
    assert admission.running == 0 and admission.waiting == 0


def test_full_queue_refuses_at_once_with_a_wait_to_retry_after():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=2, prior_seconds=7)
        holder = await admission.acquire()
        waiters = [asyncio.create_task(admission.acquire()) for _ in range(2)]
        await _queued(admission, 2)
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await asyncio.wait_for(admission.acquire(), 1)  # refused, not parked until the timeout
        elapsed = time.monotonic() - started
        holder.release()
        for waiter in waiters:  # each turn passes on when the one before it is given back
            (await asyncio.wait_for(waiter, 1)).release()
        return refused.value, elapsed, admission

    exc, elapsed, admission = asyncio.run(main())
    assert elapsed < 0.1
    assert exc.retry_after is not None and exc.retry_after > 0
    assert admission.refused == 1 and admission.running == 0 and admission.waiting == 0


def test_a_request_whose_wait_would_pass_its_deadline_is_refused():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=8, prior_seconds=5)
        holder = await admission.acquire()
        now = admission.clock()
        # One request runs and the prior says it takes 5 s: a 1 s deadline cannot be met, a 6 s one can.
        with pytest.raises(Overloaded) as refused:
            await admission.acquire(deadline=now + 1)
        waiter = asyncio.create_task(admission.acquire(deadline=now + 6))
        await _queued(admission, 1)
        # Second in line: two rounds of 5 s; 8 s is too short.
        with pytest.raises(Overloaded):
            await admission.acquire(deadline=now + 8)
        holder.release()
        (await waiter).release()
        return refused.value, admission

    exc, admission = asyncio.run(main())
    assert 3.5 < exc.retry_after < 4.5  # about how much longer than its deadline the wait would have been
    assert admission.refused == 2 and admission.running == 0


def test_the_estimate_learns_from_measured_service_times():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=8, prior_seconds=60)
        async with admission.slot():
            await asyncio.sleep(0.05)
        learned = admission.service_seconds
        with pytest.raises(RuntimeError):  # a request that fails is not a service time
            async with admission.slot():
                raise RuntimeError("boom")
        assert admission.service_seconds == learned
        holder = await admission.acquire()
        # The prior (60 s) would refuse a 2 s deadline; the measured ~0.05 s does not.
        waiter = asyncio.create_task(admission.acquire(deadline=admission.clock() + 2))
        await _queued(admission, 1)
        holder.release()
        (await waiter).release()
        return learned

    learned = asyncio.run(main())
    assert 0.04 <= learned < 1


def test_a_waiter_whose_deadline_passes_in_the_queue_times_out_and_leaves():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=8, prior_seconds=0.01)
        holder = await admission.acquire()
        late = asyncio.create_task(admission.acquire(deadline=admission.clock() + 0.05))
        patient = asyncio.create_task(admission.acquire())
        await _queued(admission, 2)
        with pytest.raises(GenerationTimeout):
            await late
        assert admission.waiting == 1
        holder.release()
        slot = await asyncio.wait_for(patient, 1)
        assert slot.waited >= 0.05
        slot.release()
        return admission

    admission = asyncio.run(main())
    assert admission.running == 0 and admission.waiting == 0


def test_a_cancelled_waiter_frees_its_place_and_blocks_nobody():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=1)
        holder = await admission.acquire()
        gone = asyncio.create_task(admission.acquire())
        await _queued(admission, 1)
        with pytest.raises(Overloaded):  # its place is taken
            await admission.acquire()
        gone.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert admission.waiting == 0
        next_one = asyncio.create_task(admission.acquire())  # the freed place is usable
        await _queued(admission, 1)
        holder.release()
        slot = await asyncio.wait_for(next_one, 1)  # the turn skipped the cancelled waiter
        assert admission.running == 1
        slot.release()
        return admission

    admission = asyncio.run(main())
    assert admission.running == 0 and admission.waiting == 0


def test_a_turn_handed_to_a_waiter_cancelled_in_the_same_instant_goes_to_the_next():
    async def main():
        admission = Admission(max_concurrent=1, max_waiting=4)
        holder = await admission.acquire()
        gone = asyncio.create_task(admission.acquire())
        await _queued(admission, 1)
        after = asyncio.create_task(admission.acquire())
        await _queued(admission, 2)
        holder.release()  # hands the turn to `gone`...
        gone.cancel()  # ...which is cancelled before it wakes up
        with pytest.raises(asyncio.CancelledError):
            await gone
        slot = await asyncio.wait_for(after, 1)
        assert admission.running == 1 and admission.waiting == 0
        slot.release()
        slot.release()  # a second release is a no-op, not a second turn given back
        return admission

    admission = asyncio.run(main())
    assert admission.running == 0


def test_running_never_exceeds_max_concurrent():
    async def main():
        admission = Admission(max_concurrent=3, max_waiting=100)
        now = peak = 0
        rng = random.Random(8)

        async def request() -> None:
            nonlocal now, peak
            await asyncio.sleep(rng.random() * 0.01)
            async with admission.slot():
                now += 1
                try:
                    peak = max(peak, now)
                    assert admission.running <= 3
                    await asyncio.sleep(rng.random() * 0.01)
                finally:
                    now -= 1

        tasks = [asyncio.create_task(request()) for _ in range(60)]
        # Cancel a few while they wait or run: none of them may leak a turn.
        await asyncio.sleep(0.01)
        for t in tasks[::7]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return peak, admission

    peak, admission = asyncio.run(main())
    assert peak == 3
    assert admission.running == 0 and admission.waiting == 0


def test_settings_build_the_queue():
    from medgpt.settings import Admission as AdmissionSettings

    admission = Admission.from_settings(AdmissionSettings(max_concurrent=2, max_waiting=5))
    assert (admission.max_concurrent, admission.max_waiting) == (2, 5)
    with pytest.raises(ValueError):
        Admission(max_concurrent=0)
