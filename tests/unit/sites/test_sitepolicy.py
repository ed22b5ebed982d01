"""Unit tests for tabfleetd.sites.sitepolicy: which hosts and addresses a site profile may send the browsers to."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from tabfleetd.settings import config as config_module
from tabfleetd.sites import profiles
from tabfleetd.errors import ConfigError
from tabfleetd.sites.sitepolicy import SitePolicy, address_kind, builtin_hosts, host_matches, literal_ip, parse_hosts, parse_networks


def policy(hosts: tuple[str, ...] = (), networks: tuple[str, ...] = ()) -> SitePolicy:
    return SitePolicy(builtin_hosts() + parse_hosts(hosts), parse_networks(networks))


def profile(start_url: str, probe_url: str = "") -> dict:
    text = f'start_url = "{start_url}"\n[input]\nselectors = ["#p"]\n[result]\nselector = "img"\n'
    if probe_url:
        text += f'[login]\nprobe_url = "{probe_url}"\nprobe_pattern = "user"\n'
    return profiles.parse(text, "site.toml")


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("100.64.0.1", "reserved"),
    ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    """Loopback, private, link-local, unspecified, multicast and other non-global addresses are named; public ones pass."""
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("host, address", [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("[::1]", "::1"), ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
    ("chatgpt.com", None), ("images.example", None), ("a1.example", None),
])
def test_literal_ips_are_read_as_a_browser_reads_them(host: str, address: str | None) -> None:
    """Shorthand IPv4 forms a browser accepts count as the address they mean; names are not addresses."""
    assert literal_ip(host) == (ipaddress.ip_address(address) if address else None)


def test_a_bad_numeric_host_is_a_problem() -> None:
    """A host whose last label is a number but that is no IPv4 address is refused, not looked up."""
    assert "not a valid IPv4 address" in (policy().host_problem("1.2.3.999") or "")


def test_host_patterns() -> None:
    """`*` is any host; `*.example.com` its subdomains only; anything else that exact host."""
    assert host_matches("a.example.com", "*.example.com") and host_matches("b.a.example.com", "*.example.com")
    assert not host_matches("example.com", "*.example.com") and not host_matches("badexample.com", "*.example.com")
    assert host_matches("anything.test", "*") and host_matches("example.com", "example.com")
    assert not host_matches("example.com.evil", "example.com")


def test_default_policy_allows_the_builtin_hosts_only() -> None:
    """By default the built-in profiles' hosts pass, other hosts and loopback, private or link-local addresses do not."""
    assert builtin_hosts() == ("chatgpt.com",)
    default = policy()
    assert default.host_problem("chatgpt.com") is None
    assert "is not a host this daemon allows (site_hosts: chatgpt.com); the operator may add it to site_hosts" in (
        default.host_problem("evil.example") or "")
    for host, kind in [("127.0.0.1", "loopback"), ("[::1]", "loopback"), ("10.0.0.5", "private"),
                       ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"), ("2130706433", "loopback")]:
        assert default.host_problem(host) == f"is a {kind} address; the operator may allow its network in site_networks"


def test_operator_lists_hosts_and_networks() -> None:
    """site_hosts adds hosts (with wildcards); site_networks lets literal addresses in that network through."""
    custom = policy(("*.example.com", "8.8.8.8"), ("127.0.0.1/32", "10.0.0.0/8"))
    assert custom.host_problem("img.example.com") is None and custom.host_problem("8.8.8.8") is None
    assert custom.host_problem("127.0.0.1") is None and custom.host_problem("10.9.9.9") is None
    assert custom.host_problem("127.0.0.2") is not None and custom.host_problem("192.168.0.1") is not None
    assert custom.host_problem("1.1.1.1") is not None  # a public address must be listed like a name


def test_profile_problems_name_the_key_and_check_what_a_name_resolves_to() -> None:
    """start_url and an absolute probe_url are checked, a name by what it resolves to; {demo} and paths pass."""
    assert asyncio.run(policy().problems(profiles.builtin("demo"))) == []
    assert asyncio.run(policy().problems(profiles.builtin("chatgpt"))) == []
    assert asyncio.run(policy().problems(profile("https://chatgpt.com/", "/api/auth/session"))) == []
    found = asyncio.run(policy().problems(profile("http://127.0.0.1:8470/", "http://169.254.169.254/latest/")))
    assert found == [
        "key 'start_url' host '127.0.0.1' is a loopback address; the operator may allow its network in site_networks",
        "key 'login.probe_url' host '169.254.169.254' is a link-local address; the operator may allow its network in site_networks",
    ]
    # localhost is in every /etc/hosts: an allowed name that resolves to loopback is refused all the same.
    found = asyncio.run(policy(("localhost",)).problems(profile("http://localhost:8470/")))
    assert len(found) == 1 and found[0].startswith("key 'start_url' host 'localhost' resolves to ")
    assert "a loopback address" in found[0]
    assert asyncio.run(policy(("localhost",), ("127.0.0.0/8", "::1/128")).problems(profile("http://localhost:8470/"))) == []


def test_an_unresolvable_allowed_name_passes() -> None:
    """A listed name that does not resolve now is accepted: the browser cannot reach it either."""
    assert asyncio.run(policy(("nowhere.invalid",)).problems(profile("https://nowhere.invalid/"))) == []


def test_bad_config_values_name_their_key(tmp_path: Path) -> None:
    """A malformed site_hosts or site_networks entry stops the daemon with a message naming the key."""
    with pytest.raises(ConfigError, match="key 'site_networks' item '10.0.0.0/33'"):
        parse_networks(("10.0.0.0/33",))
    with pytest.raises(ConfigError, match="key 'site_hosts' item 'http://x/'"):
        parse_hosts(("http://x/",))
    path = tmp_path / "c.toml"
    path.write_text('site_networks = ["not a network"]\n')
    with pytest.raises(ConfigError, match="site_networks"):
        config_module.load(path, {}, {}, tmp_path)
    path.write_text('site_hosts = ["*.Example.COM", "*"]\nsite_networks = ["127.0.0.1"]\n')
    loaded = config_module.load(path, {}, {}, tmp_path)
    assert SitePolicy.configured(loaded.site_hosts, loaded.site_networks).hosts == ("chatgpt.com", "*.example.com", "*")
