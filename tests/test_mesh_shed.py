"""Admission queue: bounded in flight, bounded queue; full or waited too long means refused at once."""

import asyncio

import pytest

from mesh.shed import QUEUE_FULL, QUEUE_TIMEOUT, AdmissionQueue, Shed


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_admits_up_to_the_limit_without_waiting():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=3, max_queue=0, max_wait_s=1.0)
        assert [await queue.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert queue.in_flight == 3 and queue.queued == 0

    run(scenario())


def test_full_queue_is_refused_at_once():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=1, max_queue=2, max_wait_s=60.0)
        await queue.acquire()
        waiting = [asyncio.create_task(queue.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        assert queue.queued == 2
        with pytest.raises(Shed) as refused:
            await queue.acquire()  # returns without suspending: the 60 s wait is never started
        assert refused.value.reason == QUEUE_FULL
        assert queue.shed_total == 1
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert queue.queued == 0 and queue.in_flight == 1

    run(scenario())


def test_waiting_too_long_is_refused_after_max_wait():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=1, max_queue=5, max_wait_s=0.05)
        await queue.acquire()
        with pytest.raises(Shed) as refused:
            await queue.acquire()
        assert refused.value.reason == QUEUE_TIMEOUT
        assert queue.queued == 0 and queue.shed_total == 1 and queue.in_flight == 1

    run(scenario())


def test_release_hands_slots_to_waiters_in_order():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=1, max_queue=5, max_wait_s=5.0)
        await queue.acquire()
        order = []

        async def waiter(name):
            waited = await queue.acquire()
            order.append(name)
            assert waited >= 0.0

        tasks = [asyncio.create_task(waiter(n)) for n in "abc"]
        await asyncio.sleep(0)
        assert queue.queued == 3
        assert not queue.try_acquire()  # nobody jumps the queue
        for _ in range(3):
            queue.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "c"]
        assert queue.in_flight == 1 and queue.queued == 0

    run(scenario())


def test_cancelled_waiter_gives_back_a_slot_handed_to_it():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=1, max_queue=5, max_wait_s=5.0)
        await queue.acquire()
        task = asyncio.create_task(queue.acquire())
        await asyncio.sleep(0)
        queue.release()  # the slot goes to the waiter...
        task.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue.in_flight == 0 and queue.try_acquire()

    run(scenario())


def test_cancelled_waiter_in_queue_is_skipped():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=1, max_queue=5, max_wait_s=5.0)
        await queue.acquire()
        first = asyncio.create_task(queue.acquire())
        second = asyncio.create_task(queue.acquire())
        await asyncio.sleep(0)
        first.cancel()
        queue.release()  # skips the cancelled waiter
        assert await second >= 0.0
        with pytest.raises(asyncio.CancelledError):
            await first
        assert queue.in_flight == 1 and queue.queued == 0

    run(scenario())


def test_overload_is_bounded():
    async def scenario():
        queue = AdmissionQueue(max_in_flight=10, max_queue=10, max_wait_s=0.05)
        results = await asyncio.gather(*(queue.acquire() for _ in range(1000)), return_exceptions=True)
        reasons = [r.reason for r in results if isinstance(r, Shed)]
        assert reasons.count(QUEUE_FULL) == 980 and reasons.count(QUEUE_TIMEOUT) == 10
        assert queue.in_flight == 10 and queue.queued == 0 and queue.shed_total == 990

    run(scenario())
