"""Site adapters: how a worker turns one prompt into image bytes on one web UI.

Every site is driven by the generic ProfileAdapter from a site profile (a TOML
file; built-ins in this directory). The job carries its checked profile, so
the worker needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import profiles
from .base import SiteAdapter
from .profile import ProfileAdapter

__all__ = ["ProfileAdapter", "SiteAdapter", "adapter_for"]


def adapter_for(site: dict[str, Any] | str, current: SiteAdapter | None = None,
                snapshot_dir: Path | None = None, wid: int | None = None) -> ProfileAdapter:
    """The adapter for a task's site: `current` when it already drives that profile, else a new one.

    `site` is the profile stored on the job, or a built-in's name (jobs queued before profiles).
    """
    spec = profiles.builtin(site) if isinstance(site, str) else site
    if isinstance(current, ProfileAdapter) and current.spec == spec:
        return current
    return ProfileAdapter(spec, snapshot_dir, wid)
