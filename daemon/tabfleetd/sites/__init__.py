"""Site adapters: how a worker turns one prompt into image bytes on one web UI."""

from __future__ import annotations

from .base import SiteAdapter
from .demo import DemoAdapter

ADAPTERS: dict[str, type[SiteAdapter]] = {"demo": DemoAdapter}


def adapter_for(name: str) -> SiteAdapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise KeyError(f"unknown site '{name}' (known: {', '.join(sorted(ADAPTERS))})") from None
