"""The control server: a Unix stream socket speaking protocol.py frames.

Every connection is checked with SO_PEERCRED, capped in number, and bounded in
time: a client that goes quiet mid-frame or between requests is dropped, a
header over the frame limit is refused before its body is read, and a frame
that cannot be decoded ends the connection.  None of it can stop the daemon.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from . import protocol
from .config import Config
from .errors import AlreadyRunning, ConfigError, NotAuthorized, ProtocolError, TabfleetError, VersionMismatch

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int
    greeted: bool = False


Handler = Callable[[str, dict[str, Any], Peer], Awaitable[Any]]


@dataclass
class Stream:
    """An op's result that is pushed as many frames: each item with "more": true, then a closing frame.

    The server pulls the next item only once the previous frame has drained, so
    a slow client holds back its producer instead of growing a buffer; the
    producer conflates what it has (snapshots) while it waits.  The stream ends
    when the iterator does (closing frame {"result": nil, "more": false}) or
    when the client closes the connection, which is how a client stops it.
    """

    items: AsyncIterator[Any]


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Peer(pid, uid, gid)


class ControlServer:
    def __init__(self, path: Path, config: Config, handler: Handler) -> None:
        self.path = path
        self.config = config
        self.handler = handler
        self.group_gid = self._group_gid(config.socket_group)
        self.connections: set[asyncio.Task[Any]] = set()
        self.server: asyncio.AbstractServer | None = None

    @staticmethod
    def _group_gid(name: str | None) -> int | None:
        if name is None:
            return None
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise ConfigError(f"socket_group '{name}' does not exist") from None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if await self._answers():
                raise AlreadyRunning(f"another tabfleetd is already listening on {self.path}")
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        if self.group_gid is not None:
            os.chown(self.path, -1, self.group_gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        log.info("listening on %s", self.path)

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 2)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.connections):
            task.cancel()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def authorised(self, peer: Peer) -> bool:
        if peer.uid in (0, os.getuid()):
            return True
        if self.group_gid is None:
            return False
        if peer.gid == self.group_gid:
            return True
        try:
            user = pwd.getpwuid(peer.uid).pw_name
            return self.group_gid in os.getgrouplist(user, peer.gid)
        except KeyError:
            return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.connections) >= self.config.max_connections:
            log.warning("connection refused: %d connections already open", len(self.connections))
            writer.close()
            return
        self.connections.add(task)
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            if not self.authorised(peer):
                log.warning("refused uid %d (pid %d): not authorised", peer.uid, peer.pid)
                await self._reply(writer, protocol.error_reply(None, NotAuthorized.code, f"uid {peer.uid} may not use this daemon"))
                return
            while await self._one_request(reader, writer, peer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            self.connections.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> bool:
        """Serve one request; False ends the connection."""
        timeout = self.config.read_timeout_s
        try:
            header = await asyncio.wait_for(reader.readexactly(protocol.HEADER.size), timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.info("connection closed inside a frame header")
            return False
        try:
            length = protocol.body_length(header, self.config.max_frame_bytes)
            body = await asyncio.wait_for(reader.readexactly(length), timeout)
            op, args, msg_id = protocol.parse_request(protocol.decode(body))
        except ProtocolError as exc:
            await self._reply(writer, protocol.error_reply(None, exc.code, str(exc)))
            return False
        try:
            if op == "hello":
                peer.greeted = True
            elif not peer.greeted:
                raise VersionMismatch("say hello first: the first request must be 'hello' with the client's protocol version")
            result = await self.handler(op, args, peer)
            reply = protocol.ok_reply(msg_id, result)
        except TabfleetError as exc:
            reply = protocol.error_reply(msg_id, exc.code, str(exc))
        except Exception as exc:
            log.exception("op %r failed", op)
            reply = protocol.error_reply(msg_id, 1000, f"internal error in '{op}': {type(exc).__name__}: {exc}")
        if isinstance(reply.get("result"), Stream):
            return await self._stream(reader, writer, msg_id, reply["result"])
        await self._reply(writer, reply)
        return True

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg_id: int | None,
                      stream: Stream) -> bool:
        """Push a stream's items until it ends (True: serve the next request) or the client leaves (False).

        No read deadline applies while the daemon pushes: the client is silent
        by design.  Its liveness shows in the writes instead: a client that
        stops reading makes drain() overrun read_timeout_s and is dropped.
        """
        gone = asyncio.ensure_future(reader.read(1))  # EOF (or any byte: the client broke the protocol)
        items = stream.items
        nxt: asyncio.Future[Any] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(items))
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    await _cancel(nxt)
                    log.debug("stream %s ended: the client left", msg_id)
                    return False
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    await self._reply(writer, protocol.ok_reply(msg_id, None) | {"more": False})
                    return True
                except TabfleetError as exc:
                    await self._reply(writer, protocol.error_reply(msg_id, exc.code, str(exc)))
                    return True
                except Exception as exc:
                    log.exception("stream %s failed", msg_id)
                    await self._reply(writer, protocol.error_reply(msg_id, 1000, f"internal error in a stream: {type(exc).__name__}: {exc}"))
                    return True
                await self._reply(writer, protocol.ok_reply(msg_id, item) | {"more": True})
        finally:
            await _cancel(gone)
            if nxt is not None:
                await _cancel(nxt)
            if isinstance(items, AsyncGenerator):
                await items.aclose()  # runs the producer's cleanup (e.g. unsubscribe) now, not at GC

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        try:
            frame = protocol.encode(reply)
        except (TypeError, ValueError, msgpack.PackException) as exc:
            frame = protocol.encode(protocol.error_reply(reply.get("id"), 1000, f"reply could not be encoded: {exc}"))
        writer.write(frame)
        await asyncio.wait_for(writer.drain(), self.config.read_timeout_s)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a helper future and wait for it, so nothing it holds outlives the stream."""
    if not task.done():
        task.cancel()
    try:
        await task
    except (asyncio.CancelledError, StopAsyncIteration, ConnectionError):
        pass  # the ordinary ends of a stream's helpers
    except Exception:
        log.debug("a stream helper ended with an error after its stream", exc_info=True)
