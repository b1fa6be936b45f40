"""SingleFlight: concurrent misses share one load; a failure reaches every waiter and is not remembered."""

from __future__ import annotations

import asyncio

import pytest

from service.cache import SingleFlight


def test_concurrent_callers_share_one_load_and_the_next_call_loads_again():
    flight, loads = SingleFlight(), []

    async def load() -> int:
        loads.append(1)
        await asyncio.sleep(0.01)
        return len(loads)

    async def main() -> tuple[list[int], int]:
        together = await asyncio.gather(*(flight.run("k", load) for _ in range(10)))
        return together, await flight.run("k", load)

    together, later = asyncio.run(main())
    assert together == [1] * 10
    assert later == 2


def test_a_failed_load_reaches_every_waiter_and_is_not_remembered():
    flight, attempts = SingleFlight(), []

    async def load() -> str:
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise LookupError("gone")
        return "found"

    async def main():
        failures = await asyncio.gather(*(flight.run("k", load) for _ in range(3)), return_exceptions=True)
        return failures, await flight.run("k", load)

    failures, retried = asyncio.run(main())
    assert [type(f) for f in failures] == [LookupError] * 3
    assert retried == "found"


def test_a_caller_that_goes_away_does_not_cancel_the_load_of_the_others():
    flight = SingleFlight()

    async def load() -> str:
        await asyncio.sleep(0.05)
        return "loaded"

    async def main() -> str:
        first = asyncio.ensure_future(flight.run("k", load))
        second = asyncio.ensure_future(flight.run("k", load))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(main()) == "loaded"
