"""An abort stops only the generation of the task it names, even one not yet begun, and a cancel stays a cancel."""

from __future__ import annotations

import asyncio

import pytest

from tabfleetd.errors import SiteError
from tabfleetd.fleet.inbox import ABORTED, Abortable


def test_abort_of_the_running_key_raises_aborted() -> None:
    """abort(key) of the task generating under that key ends it with SiteError(aborted), blamed on no worker."""

    async def body() -> None:
        generation = Abortable()
        generation.begin("job/1")
        running = asyncio.create_task(generation.run(asyncio.sleep(60)))
        await asyncio.sleep(0.01)
        assert not generation.abort("job/2")
        assert generation.abort("job/1")
        with pytest.raises(SiteError) as caught:
            await running
        assert caught.value.kind == ABORTED and caught.value.blame == "site"
        generation.end()
        assert not generation.abort("job/1")

    asyncio.run(body())


def test_abort_before_the_generation_keeps_it_from_starting() -> None:
    """An abort that comes while the task is still getting ready (a browser rotation, say) stops it all the same."""

    async def never() -> None:
        raise AssertionError("the generation ran")

    async def body() -> None:
        generation = Abortable()
        generation.begin("job/1")
        assert generation.abort("job/1")
        with pytest.raises(SiteError) as caught:
            await generation.run(never())
        assert caught.value.kind == ABORTED

    asyncio.run(body())


def test_cancel_of_the_caller_stays_a_cancel() -> None:
    """A worker stopping on a signal cancels its task: that is a CancelledError, never an abort."""

    async def body() -> None:
        generation = Abortable()
        generation.begin("job/1")
        running = asyncio.create_task(generation.run(asyncio.sleep(60)))
        await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(body())


def test_finished_step_returns_its_value() -> None:
    """A generation that ends before any abort gives its value, and a late abort of another task finds nothing."""

    async def step() -> bytes:
        return b"image"

    async def body() -> None:
        generation = Abortable()
        generation.begin("job/1")
        assert await generation.run(step()) == b"image"
        generation.end()
        generation.begin("job/2")
        assert not generation.abort("job/1")

    asyncio.run(body())
