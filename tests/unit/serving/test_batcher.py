"""Adaptive batching: concurrent requests share predict calls, results are split back exactly, callers that
go away do not break the loop, and close() drains what is queued."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from modelloop.serving.batcher import Batcher
from modelloop.serving.schema import Features


def _features(values: list[float]) -> Features:
    return Features(len(values), matrix=np.array(values, dtype=np.float64).reshape(-1, 1))


def test_batches_split_back_exactly() -> None:
    sizes: list[int] = []

    def predict(features: Features):  # type: ignore[no-untyped-def]
        time.sleep(0.005)  # while predict runs, requests pile up into the next batch
        sizes.append(features.n_rows)
        x = features.matrix[:, 0]
        return x * 2, np.column_stack([x, -x])

    async def main() -> None:
        batcher = Batcher(predict, name="m/1", max_batch_size=16, max_wait=0.002)
        inputs = [[float(i * 10 + j) for j in range(1 + i % 3)] for i in range(200)]
        results = await asyncio.gather(*(batcher.submit(_features(v), f"r{i}") for i, v in enumerate(inputs)))
        for values, (pred, proba) in zip(inputs, results, strict=True):
            assert pred.tolist() == [v * 2 for v in values]
            assert proba is not None and proba[:, 1].tolist() == [-v for v in values]
        await batcher.close()

    asyncio.run(main())
    assert sum(sizes) == sum(1 + i % 3 for i in range(200))
    assert max(sizes) <= 16 and max(sizes) > 1


def test_cancelled_callers_are_skipped_and_close_drains() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def predict(features: Features):  # type: ignore[no-untyped-def]
        gate.wait(5)
        calls.append(features.n_rows)
        return features.matrix[:, 0], None

    async def main() -> None:
        batcher = Batcher(predict, name="m/1", max_batch_size=4, max_wait=0)
        first = batcher.submit(_features([1.0]), "a")
        await asyncio.sleep(0.01)  # the first batch is now predicting (blocked on the gate)
        gone = batcher.submit(_features([2.0]), "b")
        queued = [batcher.submit(_features([float(i)]), f"q{i}") for i in range(6)]
        gone.cancel()
        closing = asyncio.create_task(batcher.close())
        gate.set()
        await closing
        assert (await first)[0].tolist() == [1.0]
        assert [(await q)[0].tolist() for q in queued] == [[float(i)] for i in range(6)]

    asyncio.run(main())
    assert sum(calls) == 7  # the cancelled request was never predicted


def test_a_failing_predict_fails_its_batch_only() -> None:
    def predict(features: Features):  # type: ignore[no-untyped-def]
        if features.matrix[0, 0] < 0:
            raise ValueError("boom")
        return features.matrix[:, 0], None

    async def main() -> None:
        batcher = Batcher(predict, name="m/1", max_batch_size=1, max_wait=0)
        bad = batcher.submit(_features([-1.0]), "bad")
        good = batcher.submit(_features([3.0]), "good")
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert isinstance(results[0], ValueError)
        assert results[1][0].tolist() == [3.0]
        await batcher.close()

    asyncio.run(main())


def test_a_pause_in_arrivals_closes_the_batch_before_max_wait() -> None:
    """max_wait is a minute here: a lone request is still answered once arrivals pause for max_idle, while
    requests arriving back to back keep filling the same batch."""
    sizes: list[int] = []

    def predict(features: Features):  # type: ignore[no-untyped-def]
        sizes.append(features.n_rows)
        return features.matrix[:, 0], None

    async def main() -> None:
        batcher = Batcher(predict, name="m/1", max_batch_size=64, max_wait=60.0, max_idle=0.05)
        lone = await asyncio.wait_for(batcher.submit(_features([1.0]), "lone"), 30)
        assert lone[0].tolist() == [1.0]

        async def stream() -> list[asyncio.Future]:  # type: ignore[type-arg]
            futures = []
            for i in range(5):  # one every 5 ms: well inside max_idle
                futures.append(batcher.submit(_features([float(i)]), f"s{i}"))
                await asyncio.sleep(0.005)
            return futures

        results = await asyncio.wait_for(asyncio.gather(*await stream()), 30)
        assert [r[0].tolist() for r in results] == [[0.0], [1.0], [2.0], [3.0], [4.0]]
        await batcher.close()

    asyncio.run(main())
    assert sizes[0] == 1 and sum(sizes) == 6
    assert len(sizes) <= 3  # the stream shared batches rather than one predict call each


def test_a_late_wake_up_is_not_a_pause_in_arrivals() -> None:
    """The process was not running (held here: the loop blocked for 4 x max_idle) while calls came in; they
    are read only a few loop turns after it runs again (as gRPC hands them over). The batch waits for them
    instead of closing on the idle timer it woke up late for."""
    sizes: list[int] = []

    def predict(features: Features):  # type: ignore[no-untyped-def]
        sizes.append(features.n_rows)
        return features.matrix[:, 0], None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        batcher = Batcher(predict, name="m/1", max_batch_size=64, max_wait=60.0, max_idle=0.05)
        first = batcher.submit(_features([1.0]), "first")
        later: list[asyncio.Future] = []  # type: ignore[type-arg]

        def arrive(hops: int) -> None:  # a call that takes a few loop turns to reach the batcher
            if hops:
                loop.call_soon(arrive, hops - 1)
            else:
                later.append(batcher.submit(_features([2.0]), "later"))

        def held() -> None:
            time.sleep(0.2)  # descheduled: the idle timer is due long before this returns
            loop.call_soon(arrive, 3)

        await asyncio.sleep(0)  # the batcher takes the first call and sleeps on its idle timer
        loop.call_soon(held)
        assert (await asyncio.wait_for(first, 30))[0].tolist() == [1.0]
        assert (await asyncio.wait_for(later[0], 30))[0].tolist() == [2.0]
        await batcher.close()

    asyncio.run(main())
    assert sizes == [2]  # one predict call for both
