"""Framed msgpack messages over a multiprocessing Pipe, read and written with asyncio.

Both ends wrap the Pipe's socket in asyncio streams so that neither the daemon's
event loop nor a worker's ever blocks on the other side.
"""

from __future__ import annotations

import asyncio
import os
import socket
from multiprocessing.connection import Connection
from typing import Any

from .. import protocol

# Workers write images themselves; only an image the output could not take travels here.
MAX_MESSAGE = 128 * 1024 * 1024


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, conn: Connection) -> Channel:
        """Take over a Pipe end; the Connection object is closed, its socket lives on."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(protocol.encode(msg))
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        """The next message; EOFError when the other side has gone."""
        try:
            header = await self.reader.readexactly(protocol.HEADER.size)
            body = await self.reader.readexactly(protocol.body_length(header, MAX_MESSAGE))
        except (asyncio.IncompleteReadError, ConnectionError):
            raise EOFError from None
        return protocol.decode(body)

    def close(self) -> None:
        self.writer.close()
