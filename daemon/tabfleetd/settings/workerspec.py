"""What each worker drives: its account and its browser, from the config's `[[workers]]` entries.

    [[workers]]                       # worker 1
    account = "alice"                 # default: worker-N, one account per worker
    browser = "remote"                # local (default): a Chromium the worker launches, over a pipe
    endpoint = "wss://browsers.example/?token=..."   # or http(s)://host:port, resolved through /json/version
    headers = { Authorization = "Bearer ..." }       # sent when connecting (remote only)

`workers = N` still works and means N local workers with accounts worker-1 .. worker-N.  With entries, the
fleet's size is their number; workers beyond them (--workers, `workers set`) are local with their own account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .endpoint import RemoteEndpoint, endpoint_problem
from ..errors import ConfigError

LOCAL, REMOTE = "local", "remote"
BROWSER_KINDS = (LOCAL, REMOTE)
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
KEYS = ("account", "browser", "endpoint", "headers")


def account_problem(name: Any) -> str | None:
    """Why `name` cannot name an account (it names a file in the state dir), or None."""
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        return ("an account name is 1 to 128 letters, digits and . _ @ + -, starting with a letter or digit, not "
                f"{str(name)[:40]!r}")
    return None


@dataclass(frozen=True)
class WorkerSpec:
    account: str | None = None
    browser: str = LOCAL
    endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def account_of(self, wid: int) -> str:
        return self.account or f"worker-{wid}"

    @property
    def remote(self) -> RemoteEndpoint | None:
        return RemoteEndpoint(self.endpoint, self.headers) if self.browser == REMOTE and self.endpoint else None


DEFAULT = WorkerSpec()


def spec_for(specs: tuple[WorkerSpec, ...], wid: int) -> WorkerSpec:
    """Worker `wid`'s entry (1-based), or a local worker with its own account beyond the entries."""
    return specs[wid - 1] if 0 < wid <= len(specs) else DEFAULT


def parse_specs(value: Any, where: str) -> tuple[WorkerSpec, ...]:
    """`[[workers]]` entries, checked; ConfigError names the entry and key."""
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where}: key 'workers' must be a number or a list of [[workers]] tables")
    return tuple(parse_spec(entry, f"{where}: [[workers]] entry {i}") for i, entry in enumerate(value, 1))


def parse_spec(entry: Mapping[str, Any], where: str) -> WorkerSpec:
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    account = entry.get("account")
    if account is not None and (problem := account_problem(account)):
        raise ConfigError(f"{where}: key 'account': {problem}")
    browser = entry.get("browser", LOCAL)
    if browser not in BROWSER_KINDS:
        raise ConfigError(f"{where}: key 'browser' must be local or remote")
    endpoint = entry.get("endpoint")
    headers = entry.get("headers", {})
    if browser == LOCAL:
        if endpoint is not None or headers:
            raise ConfigError(f"{where}: keys 'endpoint' and 'headers' are for browser = \"remote\"")
        return WorkerSpec(account=account)
    if not isinstance(endpoint, str) or not endpoint:
        raise ConfigError(f"{where}: browser = \"remote\" needs key 'endpoint' (ws://, wss://, http:// or https://)")
    problem = endpoint_problem(endpoint)
    if problem:
        raise ConfigError(f"{where}: key 'endpoint' {problem}")  # never quoted: it may hold a token
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and HEADER_NAME.fullmatch(k) and isinstance(v, str)
                                                   and "\n" not in v and "\r" not in v for k, v in headers.items()):
        raise ConfigError(f"{where}: key 'headers' must be a table of header names and string values")
    return WorkerSpec(account=account, browser=REMOTE, endpoint=endpoint, headers=tuple(sorted(headers.items())))
