"""The DevTools connection: a pyppeteer Browser driving a Chromium we launched, over its pipe.

Chromium started with `--remote-debugging-pipe` reads CDP commands on fd 3 and
writes replies and events on fd 4, each message one JSON text ended by a NUL
byte. pyppeteer 2.0 speaks CDP only over a websocket, so PipeConnection is its
Connection with the websocket replaced by PipeTransport; everything above it
(Browser, Page, sessions) is pyppeteer's own. Reading goes through the event
loop's pipe transport, so it never blocks the worker; Chromium's death is the
pipe's EOF, which fails every call in flight at once.

A worker gets its Browser from connect_browser() (a Chromium it launched, over
the pipe) or connect_remote() (a browser elsewhere, over an endpoint's
WebSocket: endpoint.py).  Both speak through CdpConnection, so a closed
connection fails every call in flight at once either way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from typing import Any

from pyppeteer.browser import Browser
from pyppeteer.connection import Connection
from pyee import EventEmitter

from .browser import Chromium, DevToolsPipe
from ..settings.endpoint import RemoteEndpoint, WebSocketTransport
from ..errors import BrowserStartError

log = logging.getLogger(__name__)

EXIT_WAIT_S = 2.0  # after an EOF at start, how long to wait for Chromium's exit code


class PipeTransport(asyncio.Protocol):
    """NUL-framed messages over two pipe fds: written without blocking, read as they arrive, None at EOF."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[str | None] = asyncio.Queue()
        self.buffer = bytearray()
        self.scanned = 0  # bytes of `buffer` already known to hold no NUL
        self.reader: asyncio.ReadTransport | None = None
        self.writer: asyncio.WriteTransport | None = None
        self.closed = False

    @classmethod
    async def open(cls, pipe: DevToolsPipe) -> PipeTransport:
        """Wrap the worker's pipe ends; the transport owns and closes them from now on."""
        loop = asyncio.get_running_loop()
        self = cls()
        replies, commands = os.fdopen(pipe.replies, "rb", buffering=0), os.fdopen(pipe.commands, "wb", buffering=0)
        try:
            self.reader, _ = await loop.connect_read_pipe(lambda: self, replies)
            self.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, commands)
        except BaseException:
            self.shutdown()
            replies.close()
            commands.close()
            raise
        return self

    # -- asyncio.Protocol, for the reading end ----------------------------------

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\0", self.scanned)) >= 0:
            self.messages.put_nowait(self.buffer[:end].decode("utf-8", errors="replace"))
            del self.buffer[:end + 1]
            self.scanned = 0
        self.scanned = len(self.buffer)

    def eof_received(self) -> bool:
        self.messages.put_nowait(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.messages.put_nowait(None)

    # -- what pyppeteer's Connection uses of its websocket ---------------------

    async def recv(self) -> str | None:
        """The next message, or None once Chromium has closed its end (it exited or crashed)."""
        message = await self.messages.get()
        if message is None:
            self.messages.put_nowait(None)  # every later recv() sees the EOF too
        return message

    def send(self, message: str) -> None:
        if self.closed or self.writer is None or self.writer.is_closing():
            raise ConnectionError("the DevTools pipe is closed")
        self.writer.write(message.encode() + b"\0")

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Close both ends; Chromium takes the closed command pipe as the order to quit."""
        if self.closed:
            return
        self.closed = True
        for transport in (self.writer, self.reader):
            if transport is not None:
                transport.close()
        self.messages.put_nowait(None)


class CdpConnection(Connection):
    """pyppeteer's Connection over a transport of ours (a PipeTransport, a WebSocketTransport) instead of its websocket."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop, url: str = "pipe:") -> None:
        # Connection.__init__ would open a websocket; these are the attributes its methods use.
        EventEmitter.__init__(self)
        self._url = url
        self._lastId = 0
        self._callbacks: dict[int, asyncio.Future[Any]] = {}
        self._delay = 0.0
        self._loop = loop
        self._sessions: dict[str, Any] = {}
        self._connected = True
        self._closeCallback = None
        self.connection = transport
        self._recv_fut = loop.create_task(self._recv_loop())

    async def _recv_loop(self) -> None:
        while self._connected:
            message = await self.connection.recv()
            if message is None:
                log.debug("DevTools connection %s: closed", self._url)
                break
            try:
                await self._on_message(message)
            except asyncio.InvalidStateError:
                pass  # the answer to a call whose caller gave up at its deadline
        if self._connected:
            self._loop.create_task(self.dispose())

    async def _async_send(self, msg: str, callback_id: int) -> None:
        try:
            sent = self.connection.send(msg)
            if inspect.isawaitable(sent):
                await sent
        except ConnectionError as exc:
            callback = self._callbacks.pop(callback_id, None)
            if callback is not None and not callback.done():
                callback.set_exception(ConnectionError(f"{callback.method}: {exc}"))  # type: ignore[attr-defined]

    def _on_response(self, msg: dict[str, Any]) -> None:
        callback = self._callbacks.get(msg.get("id", -1))
        if callback is not None and callback.done():
            del self._callbacks[msg["id"]]  # its caller gave up at a deadline
            return
        super()._on_response(msg)

    async def _on_close(self) -> None:
        forget_abandoned_calls(self)
        await super()._on_close()


PipeConnection = CdpConnection


def forget_abandoned_calls(node: Any) -> None:
    """Drop calls whose callers gave up (cancelled at a deadline): pyppeteer would fail them again and raise."""
    node._callbacks = {k: f for k, f in node._callbacks.items() if not f.done()}
    for session in getattr(node, "_sessions", {}).values():
        forget_abandoned_calls(session)


async def connect_browser(chromium: Chromium, timeout: float, viewport: dict[str, Any] | None) -> Browser:
    """Start `chromium` and return a pyppeteer Browser that drives it over its DevTools pipe, within `timeout`."""
    pipe = await chromium.start()
    try:
        transport = await PipeTransport.open(pipe)
    except BaseException:
        chromium.kill()
        raise
    connection = PipeConnection(transport, asyncio.get_running_loop())
    try:
        return await asyncio.wait_for(handshake(connection, viewport), timeout)
    except asyncio.TimeoutError:
        problem = f"did not answer on its DevTools pipe within {timeout:.0f} s"
    except Exception as exc:  # the pipe closed: Chromium exited at start
        code = await exit_code(chromium)
        problem = f"exited with code {code} at start" if code is not None else f"closed its DevTools pipe ({exc})"
    await connection.dispose()
    chromium.kill()
    raise BrowserStartError(f"Chromium {problem}; see {chromium.log_path}")


async def connect_remote(endpoint: RemoteEndpoint, timeout: float, viewport: dict[str, Any] | None) -> Browser:
    """A pyppeteer Browser driving the browser at a remote endpoint, within `timeout`; BrowserStartError says why not.

    Closing it (disconnect) closes the WebSocket only: the remote browser is not ours to quit.
    """
    transport = await WebSocketTransport.open(endpoint, timeout)
    connection = CdpConnection(transport, asyncio.get_running_loop(), endpoint.shown)
    try:
        contexts = (await asyncio.wait_for(connection.send("Target.getBrowserContexts"), timeout)).get("browserContextIds", [])
        return await asyncio.wait_for(Browser.create(connection, contexts, False, viewport, None, lambda: None), timeout)
    except asyncio.TimeoutError:
        problem = f"did not answer within {timeout:.0f} s"
    except Exception as exc:  # the connection closed, or the browser refused a command
        problem = f"failed at the handshake: {endpoint.scrub(str(exc)) or type(exc).__name__}"
    await connection.dispose()
    raise BrowserStartError(f"the remote browser at {endpoint.shown} {problem}")


async def handshake(connection: CdpConnection, viewport: dict[str, Any] | None) -> Browser:
    """What pyppeteer.connect() does once it has a connection: the browser contexts, then the Browser."""
    contexts = (await connection.send("Target.getBrowserContexts")).get("browserContextIds", [])
    return await Browser.create(connection, contexts, False, viewport, None, lambda: connection.send("Browser.close"))


async def exit_code(chromium: Chromium) -> int | None:
    try:
        return await asyncio.wait_for(chromium.wait_exit(0.05), EXIT_WAIT_S)
    except asyncio.TimeoutError:
        return None


async def close_page(browser: Browser, page: Any, timeout: float) -> None:
    """Close one page, frozen or not: Target.closeTarget ends its renderer at once (the page's own JS never runs)."""
    if page is None:
        return
    try:
        await asyncio.wait_for(browser._connection.send("Target.closeTarget", {"targetId": page.target._targetId}), timeout)
    except Exception as exc:  # the connection went meanwhile, or the browser could not: the caller's fallback follows
        log.debug("closing a page: %s", exc)
