"""A remote browser's DevTools endpoint: its address, its secrets kept out of sight, and the WebSocket to it.

An endpoint is a CDP WebSocket URL (``ws://`` or ``wss://``, as Browserless, Browserbase, Steel or Selenium
Grid's ``se:cdp`` hand out) or a DevTools HTTP endpoint (``http(s)://host:port``) resolved through
``/json/version``.  Tokens ride in the URL (userinfo, query, or a browser id in the path) or in headers from
the config; all of them are secrets.  What is shown anywhere (logs, status, events, metrics) is
``scheme://host:port`` only, and every error text passes through ``scrub`` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.legacy.client import connect as ws_connect

from ..errors import BrowserStartError

log = logging.getLogger(__name__)

SCHEMES = {"ws": 80, "wss": 443, "http": 80, "https": 443}
PING_S, PING_TIMEOUT_S = 5.0, 10.0  # a host that vanished without closing the TCP connection is noticed within 15 s
VERSION_MAX_BYTES = 64 * 1024


def endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be a remote browser's endpoint, or None.  The message never quotes the URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in SCHEMES:
        return "must start with ws://, wss://, http:// or https://"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "names port 0"
    if parts.fragment:
        return "must not hold a #fragment"
    return None


@dataclass(frozen=True)
class RemoteEndpoint:
    url: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def scheme(self) -> str:
        return urllib.parse.urlsplit(self.url).scheme

    @property
    def shown(self) -> str:
        """scheme://host:port, all that may be shown of the endpoint."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}:{parts.port or SCHEMES.get(parts.scheme, 0)}"

    def secrets(self) -> list[str]:
        """Every part of the endpoint that may hold a token, longest first (so a part is never left half hidden)."""
        parts = urllib.parse.urlsplit(self.url)
        found = {self.url, parts.query, parts.path if parts.path not in ("", "/") else "", parts.password or "",
                 parts.username or "", parts.netloc.rpartition("@")[0]}
        for _, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            found.add(value)
        for segment in parts.path.split("/"):
            found.add(segment)
        for _, value in self.headers:
            found.add(value)
            found.update(value.split())  # "Bearer TOKEN": the token alone, too
        found.update({urllib.parse.quote(s, safe="") for s in list(found)})
        return sorted((s for s in found if len(s) >= 4 and s not in ("Bearer", "Basic", "devtools", "browser", "page")),
                      key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """`text` with every secret of this endpoint replaced by ***."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


async def resolve(endpoint: RemoteEndpoint, timeout: float) -> str:
    """The browser's WebSocket URL: the endpoint itself, or what its /json/version names."""
    if endpoint.scheme in ("ws", "wss"):
        return endpoint.url
    import aiohttp  # only the remote kind needs it

    parts = urllib.parse.urlsplit(endpoint.url)
    base = parts.path.rstrip("/")
    version_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base + "/json/version", parts.query, ""))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(version_url, headers=dict(endpoint.headers), allow_redirects=False) as response:
                body = await response.content.read(VERSION_MAX_BYTES)
                if response.status != 200:
                    raise BrowserStartError(f"the remote browser at {endpoint.shown} answered HTTP {response.status} "
                                            "to /json/version")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise BrowserStartError(f"cannot reach the remote browser at {endpoint.shown}: "
                                f"{endpoint.scrub(describe(exc))}") from None
    try:
        ws_url = json.loads(body)["webSocketDebuggerUrl"]
    except (ValueError, KeyError, TypeError):
        raise BrowserStartError(f"the remote browser at {endpoint.shown} sent no webSocketDebuggerUrl in /json/version") from None
    if not isinstance(ws_url, str) or urllib.parse.urlsplit(ws_url).scheme not in ("ws", "wss"):
        raise BrowserStartError(f"the remote browser at {endpoint.shown} named no ws:// URL in /json/version")
    ws_parts = urllib.parse.urlsplit(ws_url)
    if parts.query and not ws_parts.query:
        ws_url = urllib.parse.urlunsplit(ws_parts._replace(query=parts.query))  # a gateway's token goes on too
    return ws_url


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


class WebSocketTransport:
    """CDP messages over a WebSocket, with what devtools.CdpConnection needs of a transport: recv() is None once closed."""

    def __init__(self, socket: Any, endpoint: RemoteEndpoint) -> None:
        self.socket = socket
        self.endpoint = endpoint
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, endpoint: RemoteEndpoint, timeout: float) -> WebSocketTransport:
        url = await resolve(endpoint, timeout)
        # The URL /json/version names may carry a token of its own: hide it as well as the configured one.
        shown = RemoteEndpoint(url, endpoint.headers)
        try:
            socket = await asyncio.wait_for(ws_connect(
                url, extra_headers=list(endpoint.headers), max_size=None, compression=None, open_timeout=timeout,
                ping_interval=PING_S, ping_timeout=PING_TIMEOUT_S, close_timeout=2), timeout)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise BrowserStartError(f"cannot connect to the remote browser at {endpoint.shown}: "
                                    f"{endpoint.scrub(shown.scrub(describe(exc)))}") from None
        return cls(socket, endpoint)

    async def recv(self) -> str | None:
        """The next message, or None once the connection has closed (every later call too)."""
        if self.closed.is_set():
            return None
        try:
            message = await self.socket.recv()
        except (websockets.exceptions.ConnectionClosed, ConnectionError, asyncio.IncompleteReadError):
            self.closed.set()
            return None
        return message if isinstance(message, str) else message.decode("utf-8", errors="replace")

    async def send(self, message: str) -> None:
        try:
            await self.socket.send(message)
        except (websockets.exceptions.ConnectionClosed, ConnectionError) as exc:
            self.closed.set()
            raise ConnectionError(f"the connection to {self.endpoint.shown} is closed") from exc

    async def close(self) -> None:
        self.closed.set()
        try:
            await asyncio.wait_for(self.socket.close(), 3)
        except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
            pass

    def shutdown(self) -> None:
        self.closed.set()
        transport = getattr(self.socket, "transport", None)
        if transport is not None:
            transport.abort()
