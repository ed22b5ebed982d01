"""What the control plane and the web see of the running daemon: a Protocol, not the Daemon class itself.

Commands, the dashboard, the metrics and a config reload need the daemon's parts (store, fleet, scheduler, ...)
and a few of its actions. They take a DaemonView so that they never import app.py, which builds them:
app.Daemon satisfies this Protocol, and the service layer on top is the only one that knows the class.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..store.bulk import Bulk
    from ..settings.config import Config
    from ..store.eventkeeper import EventKeeper
    from ..store.events import EventLog
    from ..fleet.fleet import Fleet
    from ..schedule.limits import Limits
    from ..fleet.roster import Roster
    from ..schedule.scheduler import Scheduler
    from .server import ControlServer
    from ..sites.sitepolicy import SitePolicy
    from ..store.store import AsyncStore


class WebLinks(Protocol):
    """The part of the web server (dashboard and metrics) that a command hands out: its sign-in link."""

    auth: Any
    urls: dict[str, str]

    def login_url(self) -> str: ...


class DaemonView(Protocol):
    """The running daemon's parts and actions that the layers under the service edge use."""

    config: Config
    started: float  # time.monotonic() at start
    submit_lock: asyncio.Lock
    events: EventLog
    site_policy: SitePolicy
    demo: Any  # the demo site (demosite.DemoSite) once a job needs it
    web: WebLinks | None
    roster: Roster
    store: AsyncStore
    keeper: EventKeeper
    fleet: Fleet
    scheduler: Scheduler
    limits: Limits
    bulk: Bulk
    server: ControlServer

    def request_stop(self) -> None: ...

    def worker_views(self) -> list[dict[str, Any]]: ...

    async def session_changed(self, account: str, but: Any = None, unblock: bool = True) -> list[int]: ...

    async def site_url(self, job: dict[str, Any]) -> str: ...
