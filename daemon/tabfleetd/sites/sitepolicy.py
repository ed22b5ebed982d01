"""The site policy: where a site profile may send this daemon's browsers.

A profile comes from a socket client, but the browser it drives holds the
accounts' sessions and runs on the daemon's machine. So its start_url and an
absolute login.probe_url must name a host on the operator's allow-list
(`site_hosts`, plus the built-in profiles' hosts), and neither the host nor
any address it resolves to may be loopback, private, link-local, unspecified,
multicast or otherwise not global, unless the operator allows that network
(`site_networks`). The bundled demo site (`{demo}`) is the daemon's own and
always allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from . import profiles
from ..errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT_S = 5.0
_HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[?[0-9a-f:.]+\]?")
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|\d+")


def address_kind(ip: IPAddress) -> str | None:
    """What makes an address one a profile may not reach by default (loopback, private, ...), or None when it is global."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "reserved"


def literal_ip(host: str) -> IPAddress | None:
    """The address a host names by itself, read the way a browser reads it ("127.1" and "2130706433" too), or None."""
    host = host.rstrip(".")
    if host.startswith("["):
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        try:  # browsers read a host whose last label is a number as IPv4, in inet_aton's forms
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise ValueError(f"'{host}' is not a valid IPv4 address") from None
    return None


def host_matches(host: str, pattern: str) -> bool:
    """`*` matches any host, `*.example.com` the subdomains of example.com, anything else exactly that host."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern.strip("[]")


def parse_hosts(values: tuple[str, ...], key: str = "site_hosts") -> tuple[str, ...]:
    hosts = tuple(v.strip().lower().rstrip(".") for v in values)
    for value, host in zip(values, hosts):
        if not _HOST_PATTERN.fullmatch(host):
            raise ConfigError(f"key '{key}' item {value!r} must be a host name, *.domain, an IP address or *")
    return hosts


def parse_networks(values: tuple[str, ...], key: str = "site_networks") -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"key '{key}' item {value!r} must be a network such as 10.0.0.0/8 or 127.0.0.1/32") from None
    return tuple(networks)


@lru_cache(maxsize=1)
def builtin_hosts() -> tuple[str, ...]:
    """The hosts the built-in profiles use; they are always allowed."""
    hosts = []
    for name in profiles.builtin_names():
        for _, url in targets(profiles.builtin(name)):
            hosts.append(host_of(url))
    return tuple(sorted(set(hosts)))


def targets(profile: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, URL) of each place the profile sends a browser to, except the bundled demo site and same-site paths.

    A start URL whose variables have no value yet (`sites check` of a profile with `{host}`) is checked once a
    job binds them.
    """
    found = []
    url = profile["start_url"]
    if not url.startswith("{demo}"):
        values = {name: value for name, value in (profile.get("vars") or {}).items() if value}
        try:
            found.append(("start_url", url.format_map(values | {"demo": "", "job": "job"})))
        except KeyError:
            pass
    probe = profile["login"]["probe_url"]
    if probe.startswith(("http://", "https://")):
        found.append(("login.probe_url", probe))
    return found


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".")


@dataclass(frozen=True)
class SitePolicy:
    """The operator's allow-list of hosts and of networks beyond the public internet."""

    hosts: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()

    @classmethod
    def configured(cls, site_hosts: tuple[str, ...], site_networks: tuple[str, ...]) -> SitePolicy:
        """The policy from the config's site_hosts and site_networks (taken as values, so sites never import config)."""
        return cls(builtin_hosts() + parse_hosts(site_hosts), parse_networks(site_networks))

    def allowed_network(self, ip: IPAddress) -> bool:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        return any(mapped in net or ip in net for net in self.networks)

    def address_problem(self, ip: IPAddress) -> str | None:
        kind = address_kind(ip)
        if kind is None or self.allowed_network(ip):
            return None
        return f"a {kind} address; the operator may allow its network in site_networks"

    def host_problem(self, host: str) -> str | None:
        """Why a profile may not name `host` (before any lookup), or None."""
        try:
            ip = literal_ip(host)
        except ValueError as exc:
            return str(exc)
        if ip is not None and address_kind(ip) is not None:
            problem = self.address_problem(ip)
            return f"is {problem}" if problem else None
        if not any(host_matches(host.lower(), pattern) for pattern in self.hosts):
            return (f"is not a host this daemon allows (site_hosts: {', '.join(self.hosts) or 'none'}); "
                    "the operator may add it to site_hosts")
        return None

    async def problems(self, profile: dict[str, Any]) -> list[str]:
        """What in a checked profile this daemon refuses, each naming its key; host names are looked up off the loop."""
        found = []
        for key, url in targets(profile):
            plain = profiles.http_url_problem(url)
            if plain:  # a variable's value may have made the host unreadable
                found.append(f"key '{key}' ({url}) {plain}")
                continue
            host = host_of(url)
            problem = self.host_problem(host)
            if problem is None and literal_ip(host) is None:
                problem = await self.resolved_problem(host, urlsplit(url).port or 443)
            if problem:
                found.append(f"key '{key}' host '{host}' {problem}")
        return found

    async def resolved_problem(self, host: str, port: int) -> str | None:
        """Why an allowed host name may not be used after all: an address it resolves to is not public.

        A name that does not resolve now is let through: the browser cannot reach it either.
        """
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, UnicodeError):
            return None
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            problem = self.address_problem(ip)
            if problem:
                return f"resolves to {ip}, {problem}"
        return None
