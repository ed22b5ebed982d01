"""A config reload (SIGHUP, `systemctl reload tabfleetd`): the keys that can change live do, without dropping work.

Only keys whose value changed are applied, so a fleet resized with
`tabfleetctl workers set` keeps its size unless the file's `workers` changed.
Any other changed key is logged as waiting for the next start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..settings.config import FIELDS, RELOADABLE, Config
from ..schedule.retries import RetryPolicy

if TYPE_CHECKING:
    from ..control.daemonview import DaemonView

log = logging.getLogger(__name__)


def changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Each key whose value differs: (old, new)."""
    return {name: (getattr(old, name), getattr(new, name)) for name in FIELDS if getattr(old, name) != getattr(new, name)}


def apply(daemon: DaemonView, new: Config) -> tuple[list[str], list[str]]:
    """Put the reloadable keys of `new` into the running daemon; return (applied, waiting for a restart)."""
    changed = changes(daemon.config, new)
    # New [[workers]] bindings need a restart; resizing to their count now would half-apply them.
    hold = {"workers"} if "worker_specs" in changed else set()
    live = sorted(k for k in changed if k in RELOADABLE and k not in hold)
    later = sorted(k for k in changed if k not in RELOADABLE or k in hold)
    daemon.config = daemon.config.replace(**{k: getattr(new, k) for k in live})
    cfg = daemon.config
    if "workers" in live:
        daemon.fleet.resize(cfg.workers)
    if {"site_rate_per_min", "account_rate_per_min"} & set(live):
        daemon.limits.configure(cfg.site_rate_per_min, cfg.account_rate_per_min)
    if {"retry_base_s", "retry_cap_s"} & set(live):
        daemon.scheduler.policy = RetryPolicy(cfg.retry_base_s, cfg.retry_cap_s)
    if "task_deadline_s" in live:
        daemon.scheduler.deadline_s = cfg.task_deadline_s
        daemon.fleet.config = daemon.fleet.config.replace(task_deadline_s=cfg.task_deadline_s)
    if "log_level" in live:
        logging.getLogger().setLevel(cfg.log_level.upper())
    for key in live:
        log.info("config reloaded: %s = %r (was %r)", key, changed[key][1], changed[key][0])
    for key in later:
        log.warning("config key %s changed to %r; it takes effect when tabfleetd next starts", key, changed[key][1])
    if not changed:
        log.info("config reloaded: nothing changed")
    daemon.scheduler.kick()
    return live, later
