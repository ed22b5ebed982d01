"""The daemon's opt-in HTTP side: the dashboard and the metrics endpoint, each on its configured port.

Both run inside the daemon's event loop as aiohttp apps (as the demo site
does).  When dashboard_port and metrics_port are the same, one app serves
both.  Bound to loopback (the default), requests must name a loopback Host,
so a web page elsewhere cannot read them through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ConfigError

if TYPE_CHECKING:
    from .app import Daemon

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


class WebServer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.runners: list[web.AppRunner] = []
        self.parts: list[Any] = []  # the dashboard and metrics objects, closed on stop
        self.urls: dict[str, str] = {}

    async def start(self) -> None:
        from .dashboard import Dashboard
        from .metrics import Metrics

        cfg = self.daemon.config
        listeners: dict[tuple[str, int], list[str]] = {}
        if cfg.dashboard_port:
            listeners.setdefault((cfg.dashboard_host, cfg.dashboard_port), []).append("dashboard")
        if cfg.metrics_port:
            listeners.setdefault((cfg.metrics_host, cfg.metrics_port), []).append("metrics")
        for (host, port), names in listeners.items():
            app = web.Application(middlewares=[host_guard(port)] if is_loopback(host) else [])
            if "dashboard" in names:
                dashboard = Dashboard(self.daemon)
                dashboard.add_routes(app)
                self.parts.append(dashboard)
            if "metrics" in names:
                metrics = Metrics(self.daemon)
                app.router.add_get("/metrics", self._metrics_handler(metrics))
                self.parts.append(metrics)
            if not is_loopback(host):
                log.warning("the %s listens on %s, beyond loopback, with no login", " and ".join(names), host)
            await self._listen(app, host, port, names)

    async def _listen(self, app: web.Application, host: str, port: int, names: list[str]) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"the {' and '.join(names)} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.runners.append(runner)
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        for name in names:
            self.urls[name] = base + ("/metrics" if name == "metrics" else "/")
            log.info("%s at %s", name, self.urls[name])

    @staticmethod
    def _metrics_handler(metrics: Any) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            # Built on the loop: the collector reads in-memory state and /proc only, so a scrape takes milliseconds.
            body, content_type = metrics.render(request.headers.get("Accept", ""))
            return web.Response(body=body, headers={"Content-Type": content_type})

        return handle

    async def stop(self) -> None:
        for part in self.parts:
            part.close()
        self.parts.clear()
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()


async def start_web(daemon: Daemon) -> WebServer | None:
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
