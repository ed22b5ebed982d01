"""Unit tests for tabfleetd.fleet.devtools: NUL framing of the DevTools pipe and calls abandoned at their deadline."""

from __future__ import annotations

import asyncio
import json
import os

from tabfleetd.fleet.browser import DevToolsPipe
from tabfleetd.fleet.devtools import PipeConnection, PipeTransport, forget_abandoned_calls


def test_messages_are_cut_at_each_nul_however_the_bytes_arrive() -> None:
    """Messages split over many reads, several in one read, and a large one all come out whole and in order."""
    async def run() -> list[str | None]:
        transport = PipeTransport()
        big = json.dumps({"id": 3, "result": {"data": "x" * 300_000}})
        stream = b'{"id":1}\0{"id":2,"text":"\xc3\xa9"}\0' + big.encode() + b"\0"
        for start in range(0, len(stream), 4093):
            transport.data_received(stream[start:start + 4093])
        transport.eof_received()
        return [await transport.recv() for _ in range(5)]

    got = asyncio.run(run())
    assert got[:2] == ['{"id":1}', '{"id":2,"text":"é"}']
    assert got[2] is not None and len(json.loads(got[2])["result"]["data"]) == 300_000
    assert got[3:] == [None, None]  # EOF, and EOF again for every later reader


def test_a_partial_message_at_eof_is_not_delivered() -> None:
    """Bytes without their closing NUL when the pipe ends are not a message."""
    async def run() -> list[str | None]:
        transport = PipeTransport()
        transport.data_received(b'{"id":1}\0{"id":2')
        transport.connection_lost(None)
        return [await transport.recv(), await transport.recv()]

    assert asyncio.run(run()) == ['{"id":1}', None]


def test_a_late_answer_to_an_abandoned_call_keeps_the_connection_alive() -> None:
    """A call cancelled at its deadline is answered later: the answer is dropped and the next call still works."""
    async def run() -> tuple[bool, dict, list[int]]:
        commands_in, commands = os.pipe()
        replies, replies_out = os.pipe()
        transport = await PipeTransport.open(DevToolsPipe(commands, replies))
        connection = PipeConnection(transport, asyncio.get_running_loop())
        try:
            await asyncio.wait_for(connection.send("Slow.call"), 0.05)
        except asyncio.TimeoutError:
            pass
        second = connection.send("Fast.call")
        os.write(replies_out, b'{"id":1,"result":{"late":true}}\0{"id":2,"result":{"ok":true}}\0')
        result = await asyncio.wait_for(second, 5)
        sent = os.read(commands_in, 65536).split(b"\0")
        os.close(replies_out)  # EOF: the connection closes
        for _ in range(100):
            if not connection._connected:
                break
            await asyncio.sleep(0.01)
        closed = not connection._connected
        os.close(commands_in)
        return closed, result, [json.loads(m)["id"] for m in sent if m]

    closed, result, ids = asyncio.run(run())
    assert result == {"ok": True} and ids == [1, 2] and closed


def test_forgetting_abandoned_calls_keeps_those_still_awaited() -> None:
    """Done (cancelled) futures are dropped from a connection and its sessions; pending ones stay."""
    class Node:
        def __init__(self) -> None:
            self._callbacks: dict[int, asyncio.Future[None]] = {}
            self._sessions: dict[str, Node] = {}

    async def run() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        root, session = Node(), Node()
        root._sessions["s"] = session
        for node in (root, session):
            node._callbacks = {1: loop.create_future(), 2: loop.create_future()}
            node._callbacks[1].cancel()
        forget_abandoned_calls(root)
        return list(root._callbacks), list(session._callbacks)

    assert asyncio.run(run()) == ([2], [2])
