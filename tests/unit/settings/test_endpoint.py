"""Unit tests for tabfleetd.settings.endpoint and tabfleetd.settings.workerspec: endpoints shown without secrets, resolved, configured."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tabfleetd.settings.config import load
from tabfleetd.settings.endpoint import RemoteEndpoint, endpoint_problem, resolve
from tabfleetd.errors import BrowserStartError, ConfigError
from tabfleetd.settings.workerspec import LOCAL, REMOTE, WorkerSpec, spec_for

HOME = Path("/home/tester")
TOKEN = "tok-4f9a8b7c6d5e"


@pytest.mark.parametrize("url, shown", [
    (f"wss://chrome.browserless.io?token={TOKEN}", "wss://chrome.browserless.io:443"),
    (f"ws://user:{TOKEN}@10.0.0.5:9222/devtools/browser/{TOKEN}", "ws://10.0.0.5:9222"),
    ("http://[fd00::5]:9222", "http://[fd00::5]:9222"),
    (f"https://connect.example/session?apiKey={TOKEN}", "https://connect.example:443"),
])
def test_only_scheme_host_and_port_are_shown(url: str, shown: str) -> None:
    """What status, logs and metrics show of an endpoint is scheme://host:port; the secret goes from any text."""
    endpoint = RemoteEndpoint(url, (("Authorization", f"Bearer {TOKEN}x"),))
    assert endpoint.shown == shown and TOKEN not in endpoint.shown
    text = f"cannot connect to {url} (sent Authorization: Bearer {TOKEN}x); {url.replace('?', '/?')}"
    scrubbed = endpoint.scrub(text)
    assert TOKEN not in scrubbed and "***" in scrubbed


@pytest.mark.parametrize("url, problem", [
    ("ftp://h:1", "must start with ws://"), ("ws://", "names no host"), ("http://h:0", "port 0"),
    ("http://h:99999", "not a URL"), ("ws://h:1/#frag", "#fragment")])
def test_bad_endpoints_are_refused_without_quoting_them(url: str, problem: str) -> None:
    """A bad endpoint is named by its problem, never echoed (it may hold a token)."""
    found = endpoint_problem(url)
    assert found is not None and problem in found and url not in found


def test_workers_tables_bind_accounts_and_browsers(tmp_path: Path) -> None:
    """[[workers]] entries set the fleet's size, each worker's account and browser; beyond them, local with worker-N."""
    path = tmp_path / "c.toml"
    path.write_text(f'''[[workers]]
account = "alice"
[[workers]]
browser = "remote"
endpoint = "wss://b.example/?token={TOKEN}"
headers = {{ Authorization = "Bearer {TOKEN}" }}
''')
    cfg = load(path, {}, {}, HOME)
    assert cfg.workers == 2
    assert cfg.worker_spec(1) == WorkerSpec(account="alice")
    remote = cfg.worker_spec(2)
    assert (remote.browser, remote.account_of(2), remote.remote.shown) == (REMOTE, "worker-2", "wss://b.example:443")
    assert spec_for(cfg.worker_specs, 3) == WorkerSpec() and cfg.worker_spec(3).account_of(3) == "worker-3"
    assert load(path, {"workers": 5}, {}, HOME).workers == 5  # --workers still sizes the fleet
    assert cfg.worker_spec(1).browser == LOCAL


@pytest.mark.parametrize("entry, problem", [
    ('browser = "docker"', "[[workers]] entry 1: key 'browser' must be local or remote"),
    ('browser = "remote"', "needs key 'endpoint'"),
    ('endpoint = "ws://h:1"', "keys 'endpoint' and 'headers' are for browser = \"remote\""),
    ('account = "../etc"', "key 'account': an account name"),
    ('acount = "x"', "unknown key 'acount'"),
    (f'browser = "remote"\nendpoint = "ftp://h/?token={TOKEN}"', "key 'endpoint' must start with ws://"),
    ('browser = "remote"\nendpoint = "ws://h:1"\nheaders = { "Bad Name" = "x" }', "key 'headers' must be a table"),
])
def test_bad_workers_tables_name_the_entry_and_key(tmp_path: Path, entry: str, problem: str) -> None:
    """A bad [[workers]] entry stops the daemon with a message naming the entry and the key, never the token."""
    path = tmp_path / "c.toml"
    path.write_text(f"[[workers]]\n{entry}\n")
    with pytest.raises(ConfigError) as info:
        load(path, {}, {}, HOME)
    assert problem in str(info.value) and TOKEN not in str(info.value)


def test_worker_specs_is_not_a_key_of_its_own(tmp_path: Path) -> None:
    """The bindings come only from [[workers]] tables."""
    path = tmp_path / "c.toml"
    path.write_text("worker_specs = []\n")
    with pytest.raises(ConfigError, match="unknown key 'worker_specs'"):
        load(path, {}, {}, HOME)


def test_an_http_endpoint_resolves_through_json_version_with_its_token_and_headers() -> None:
    """/json/version is asked with the configured headers; the token in the query goes on to the WebSocket URL;
    a refusal is named by host and status only."""
    seen: list[dict[str, Any]] = []

    async def version(request: web.Request) -> web.Response:
        seen.append({"query": dict(request.query), "auth": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        return web.json_response({"webSocketDebuggerUrl": f"ws://{request.host}/devtools/browser/abc"})

    async def run() -> tuple[str, str]:
        app = web.Application()
        app.router.add_get("/json/version", version)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            url = f"http://127.0.0.1:{port}/?token={TOKEN}"
            resolved = await resolve(RemoteEndpoint(url, (("Authorization", f"Bearer {TOKEN}"),)), 5)
            try:
                await resolve(RemoteEndpoint(url), 5)
            except BrowserStartError as exc:
                refused = str(exc)
            return resolved, refused
        finally:
            await runner.cleanup()

    resolved, refused = asyncio.run(run())
    assert resolved.endswith(f"/devtools/browser/abc?token={TOKEN}")
    assert seen[0] == {"query": {"token": TOKEN}, "auth": f"Bearer {TOKEN}"}
    assert "answered HTTP 401" in refused and TOKEN not in refused


def test_an_unreachable_endpoint_is_named_without_its_secret() -> None:
    """Connection refused: the error names scheme://host:port and hides the token."""
    async def run() -> str:
        try:
            await resolve(RemoteEndpoint(f"http://user:{TOKEN}@127.0.0.1:9/?token={TOKEN}"), 3)
        except BrowserStartError as exc:
            return str(exc)
        return ""

    message = asyncio.run(run())
    assert "http://127.0.0.1:9" in message and TOKEN not in message, message
