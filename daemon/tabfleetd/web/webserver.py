"""The daemon's opt-in HTTP side: the dashboard and the metrics endpoint, each on its configured port.

Both run inside the daemon's event loop as aiohttp apps (as the demo site
does).  When dashboard_port and metrics_port are the same, one app serves
both.  Every request needs the operator's token or a session cookie
(webauth.py).  Bound to loopback (the default), requests must also name a
loopback Host, so a web page elsewhere cannot read them through DNS rebinding.

No client can use up the daemon's file descriptors: at most
web_max_connections are open (a new one past it closes the oldest), a
connection must send its request within web_idle_timeout_s of connecting or
of its last reply, and the accept loop (listener.py) keeps a spare descriptor
so it never spins on EMFILE.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ConfigError
from ..control.listener import Listener
from ..logthrottle import ThrottledLog
from .webauth import WebAuth, load_token

if TYPE_CHECKING:
    from ..control.daemonview import DaemonView

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_guard(port: int) -> Any:
    """Middleware refusing requests whose Host header is not a loopback name for this port."""
    allowed = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in allowed:
            log.warning("refused HTTP request for Host %r from %s", request.host, request.remote)
            raise web.HTTPMisdirectedRequest(text="this server answers only to loopback host names\n")
        return await handler(request)

    return guard


class ConnectionCap:
    """At most `limit` HTTP connections open: a new one past it closes the oldest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[asyncio.BaseTransport, None] = {}  # oldest first
        self.pending = 0  # accepted, transport still being made
        self.evictions = ThrottledLog(log)

    def make_room(self) -> None:
        for transport in [t for t in self.open if t.is_closing()]:
            del self.open[transport]
        while self.open and len(self.open) + self.pending >= self.limit:
            oldest = next(iter(self.open))
            del self.open[oldest]
            oldest.abort()
            self.evictions.warning("HTTP connections at web_max_connections (%d): closed the oldest", self.limit)

    def close(self) -> None:
        for transport in self.open:
            transport.abort()
        self.open.clear()


async def bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of `host` (resolved off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class WebServer:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.runners: list[web.AppRunner] = []
        self.listeners: list[Listener] = []
        self.parts: list[Any] = []  # the dashboard and metrics objects, closed on stop
        self.urls: dict[str, str] = {}
        self.auth: WebAuth | None = None
        self.cap = ConnectionCap(daemon.config.web_max_connections)

    async def start(self) -> None:
        from .dashboard import Dashboard
        from .metrics import Metrics

        cfg = self.daemon.config
        token = await asyncio.get_running_loop().run_in_executor(None, load_token, cfg.web_token_file, cfg.state_dir)
        self.auth = WebAuth(token)
        listeners: dict[tuple[str, int], list[str]] = {}
        if cfg.dashboard_port:
            listeners.setdefault((cfg.dashboard_host, cfg.dashboard_port), []).append("dashboard")
        if cfg.metrics_port:
            listeners.setdefault((cfg.metrics_host, cfg.metrics_port), []).append("metrics")
        for (host, port), names in listeners.items():
            app = web.Application(middlewares=([host_guard(port)] if is_loopback(host) else []) + [self.auth.middleware])
            app.router.add_get("/login/{code}", self.auth.login, name="login")
            if "dashboard" in names:
                dashboard = Dashboard(self.daemon)
                dashboard.add_routes(app)
                self.parts.append(dashboard)
            if "metrics" in names:
                metrics = Metrics(self.daemon)
                app.router.add_get("/metrics", self._metrics_handler(metrics))
                self.parts.append(metrics)
            if not is_loopback(host):
                log.warning("the %s listens on %s, beyond loopback, over plain HTTP: its token and pages cross the "
                            "network unencrypted", " and ".join(names), host)
            await self._listen(app, host, port, names)

    async def _listen(self, app: web.Application, host: str, port: int, names: list[str]) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               keepalive_timeout=self.daemon.config.web_idle_timeout_s)
        await runner.setup()
        self.runners.append(runner)
        try:
            socks = await bind_tcp(host, port)
        except OSError as exc:
            raise ConfigError(f"the {' and '.join(names)} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        what = " and ".join(names)
        self.listeners += [Listener(sock, functools.partial(self._accepted, runner), what) for sock in socks]
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        for name in names:
            self.urls[name] = base + ("/metrics" if name == "metrics" else "/")
            log.info("%s at %s", name, self.urls[name])

    def _accepted(self, runner: web.AppRunner, sock: socket.socket) -> None:
        self.cap.make_room()
        self.cap.pending += 1
        asyncio.create_task(self._attach(runner, sock))

    async def _attach(self, runner: web.AppRunner, sock: socket.socket) -> None:
        try:
            assert runner.server is not None
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(runner.server, sock)
            self.cap.open[transport] = None
        except Exception:
            log.debug("an HTTP connection could not be set up", exc_info=True)
            sock.close()
        finally:
            self.cap.pending -= 1

    def login_url(self) -> str:
        """A one-time link that signs a browser in to the dashboard."""
        assert self.auth is not None
        return self.urls["dashboard"] + "login/" + self.auth.new_code()

    @staticmethod
    def _metrics_handler(metrics: Any) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            # Built on the loop: the collector reads in-memory state and /proc only, so a scrape takes milliseconds.
            body, content_type = metrics.render(request.headers.get("Accept", ""))
            return web.Response(body=body, headers={"Content-Type": content_type})

        return handle

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        self.cap.close()
        for part in self.parts:
            part.close()
        self.parts.clear()
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()


async def start_web(daemon: DaemonView) -> WebServer | None:
    """Start the dashboard and metrics endpoint when configured; None when neither is."""
    if not (daemon.config.dashboard_port or daemon.config.metrics_port):
        return None
    server = WebServer(daemon)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    return server
