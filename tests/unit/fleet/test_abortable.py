"""An abort stops only the generation it names, and a cancel of the worker stays a cancel."""

from __future__ import annotations

import asyncio

import pytest

from tabfleetd.errors import SiteError
from tabfleetd.fleet.inbox import ABORTED, Abortable


def test_abort_of_the_running_key_raises_aborted() -> None:
    """abort(key) of the step running under that key ends it with SiteError(aborted), blamed on nobody's worker."""

    async def body() -> None:
        generation = Abortable()
        running = asyncio.create_task(generation.run("job/1", asyncio.sleep(60)))
        await asyncio.sleep(0.01)
        assert not generation.abort("job/2")
        assert generation.abort("job/1")
        with pytest.raises(SiteError) as caught:
            await running
        assert caught.value.kind == ABORTED and caught.value.blame == "site"
        assert generation.key is None and not generation.abort("job/1")

    asyncio.run(body())


def test_cancel_of_the_caller_stays_a_cancel() -> None:
    """A worker stopping on a signal cancels its task: that is a CancelledError, never an abort."""

    async def body() -> None:
        generation = Abortable()
        running = asyncio.create_task(generation.run("job/1", asyncio.sleep(60)))
        await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(body())


def test_finished_step_returns_its_value() -> None:
    """A step that ends before any abort gives its value, and a late abort finds nothing to stop."""

    async def step() -> bytes:
        return b"image"

    async def body() -> None:
        generation = Abortable()
        assert await generation.run("job/1", step()) == b"image"
        assert not generation.abort("job/1")

    asyncio.run(body())
