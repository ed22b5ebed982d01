"""The control server's streams over a real Unix socket: ends, disconnects, and a client that stops reading."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tabfleetd import protocol
from tabfleetd.settings.config import Config
from tabfleetd.control.server import ControlServer, Peer, Stream

BLOB = "x" * 20_000  # big frames fill the socket buffers quickly


class Producer:
    """An endless or finite stream that records how often it was pulled and whether it was closed."""

    def __init__(self, count: int | None = None, blob: str = "") -> None:
        self.count = count
        self.blob = blob
        self.pulled = 0
        self.closed = asyncio.Event()

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while self.count is None or self.pulled < self.count:
                self.pulled += 1
                yield {"n": self.pulled, "blob": self.blob}
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()


@pytest.fixture
def root() -> Iterator[Path]:
    """A short directory for the socket (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tf-u-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def serve(root: Path, producer: Producer, read_timeout_s: float = 30.0) -> tuple[ControlServer, Path]:
    path = root / "s.sock"
    config = Config(socket=path, state_dir=root, read_timeout_s=read_timeout_s)

    async def handler(op: str, args: dict[str, Any], peer: Peer) -> Any:
        if op == "stream":
            return Stream(producer.items())
        return {"op": op}

    server = ControlServer(path, config, handler)
    await server.start()
    return server, path


async def connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    await send(writer, "hello", {"version": protocol.PROTOCOL_VERSION}, 1)
    assert (await recv(reader))["ok"]
    return reader, writer


async def send(writer: asyncio.StreamWriter, op: str, args: dict[str, Any], msg_id: int) -> None:
    writer.write(protocol.encode(protocol.request(op, args, msg_id)))
    await writer.drain()


async def recv(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await asyncio.wait_for(reader.readexactly(protocol.HEADER.size), 10)
    return protocol.decode(await asyncio.wait_for(reader.readexactly(protocol.body_length(header)), 10))


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def test_finite_stream_ends_and_the_connection_carries_on(root: Path) -> None:
    """A stream's items come with "more": true, then a closing frame; the next request on the same connection works."""
    async def body() -> None:
        producer = Producer(count=3)
        server, path = await serve(root, producer)
        reader, writer = await connect(path)
        await send(writer, "stream", {}, 7)
        frames = [await recv(reader) for _ in range(4)]
        assert [f["result"] and f["result"]["n"] for f in frames] == [1, 2, 3, None]
        assert [f["more"] for f in frames] == [True, True, True, False]
        assert {f["id"] for f in frames} == {7}
        await send(writer, "ping", {}, 8)
        assert (await recv(reader))["result"] == {"op": "ping"}
        writer.close()
        await server.close()
    run(body)


def test_client_leaving_mid_stream_closes_the_producer(root: Path) -> None:
    """A client that closes its socket mid-stream has its producer closed and its connection freed at once."""
    async def body() -> None:
        producer = Producer()
        server, path = await serve(root, producer)
        reader, writer = await connect(path)
        await send(writer, "stream", {}, 2)
        await recv(reader)
        await recv(reader)
        writer.close()
        await asyncio.wait_for(producer.closed.wait(), 5)
        await until(lambda: not server.connections)
        # The server is unharmed: a new client streams as before.
        second = Producer(count=1)
        server.handler = lambda op, args, peer: _stream_or_echo(op, second)
        reader, writer = await connect(path)
        await send(writer, "stream", {}, 3)
        assert (await recv(reader))["more"] is True
        assert (await recv(reader))["more"] is False
        writer.close()
        await server.close()
    run(body)


async def _stream_or_echo(op: str, producer: Producer) -> Any:
    return Stream(producer.items()) if op == "stream" else {"op": op}


def test_a_client_that_stops_reading_is_dropped_without_unbounded_buffering(root: Path) -> None:
    """The server pulls only what fits in the socket buffers, then drops the silent reader after read_timeout_s."""
    async def body() -> None:
        producer = Producer(blob=BLOB)
        server, path = await serve(root, producer, read_timeout_s=0.5)
        _, writer = await connect(path)
        await send(writer, "stream", {}, 2)
        # Never read again: the server must stop pulling once its buffers are full, then give up on us.
        await asyncio.wait_for(producer.closed.wait(), 20)
        pulled = producer.pulled
        assert pulled * len(BLOB) < 8 * 2**20, f"{pulled} frames were produced for a client that read none"
        await until(lambda: not server.connections)
        writer.close()
        await server.close()
    run(body)


def test_server_close_ends_open_streams(root: Path) -> None:
    """Stopping the server closes every stream's producer."""
    async def body() -> None:
        producer = Producer()
        server, path = await serve(root, producer)
        reader, writer = await connect(path)
        await send(writer, "stream", {}, 2)
        await recv(reader)
        await server.close()
        await asyncio.wait_for(producer.closed.wait(), 5)
        writer.close()
    run(body)
