"""The control ops on accounts: list them, import, export and remove their sessions.

Sessions are the crown jewels: whoever holds one is signed in as that account.  Listing shows states only.
Import and remove are the operator's (shared_fleet may open them to every socket client, as it does login);
export is root's and the daemon user's alone, whatever the config says.  A client reads its cookies file
itself and sends the text, as `submit --site FILE` does: the daemon never opens a client's files.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from ..fleet import cookiefile
from .commands import OPERATOR_OPS, OPERATOR_ONLY_OPS, Commands, arg, op
from ..errors import BadArgs, NotFound
from .server import Peer
from ..settings.workerspec import account_problem

OPERATOR_OPS.update({"accounts_import": "import an account's session", "accounts_remove": "remove an account's session"})
OPERATOR_ONLY_OPS.update({"accounts_export": "export an account's session"})
FORMATS = ("json", "netscape")


def name_arg(args: dict[str, Any]) -> str:
    name = arg(args, "name", str)
    problem = account_problem(name)
    if problem:
        raise BadArgs(f"argument 'name': {problem}")
    return name


def known_accounts(self: Commands) -> list[str]:
    """Accounts with a file, or a worker bound to them (by [[workers]] or by default)."""
    d = self.daemon
    names = {a.name for a in d.roster.accounts.values() if a.has_file or a.damaged}
    names |= {d.config.worker_spec(wid).account_of(wid) for wid in range(1, d.fleet.target + 1)}
    names |= {h.account for h in d.fleet.workers.values()}
    return sorted(names)


# accounts {} -> {"accounts": [{"name", "state" (signed in|signed out|challenged|unknown), "reason", "workers": [int],
#   "cooling_s", "quota", "last_used", "saved", "source", "cookies", "origins", "stored", "damaged"}]}
#   every known account with its state; never a session
@op("accounts")
async def accounts(self: Commands, args: dict[str, Any], peer: Peer) -> Any:
    d, now = self.daemon, time.time()
    listed = []
    for name in known_accounts(self):
        view = d.roster.view(name)
        listed.append(view | {"workers": [h.wid for h in d.fleet.of_account(name)],
                              "cooling_s": round(d.limits.cooling(name, now), 1),
                              "quota": d.limits.quota.get(name) if d.limits.cooling(name, now) > 0 else None})
    return {"accounts": listed}


# accounts_import {"name": str, "filename": str, "data": str|bin} -> {"name", "cookies", "origins", "workers": [int]}
#   the file's text (Netscape cookies.txt, or JSON: a cookie list as extensions export it, or Playwright's
#   storageState) becomes the account's session, replacing the stored one; its workers take it at once
#   (replacing their browsers' cookies) and blocked ones work again.  A bad file names its line (SessionFileError).
@op("accounts_import")
async def accounts_import(self: Commands, args: dict[str, Any], peer: Peer) -> Any:
    d = self.daemon
    name = name_arg(args)
    filename = arg(args, "filename", str, "cookies")
    data = arg(args, "data", (str, bytes))
    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    session = await asyncio.get_running_loop().run_in_executor(None, functools.partial(cookiefile.parse, text, filename))
    await d.roster.import_session(name, session)
    told = await d.session_changed(name)
    return {"name": name, "cookies": len(session["cookies"]), "origins": len(session["origins"]), "workers": told}


# accounts_export {"name": str, "format": "json"|"netscape" (json)} -> {"name", "format", "text"}
#   the stored session: json is Playwright's storageState (cookies and local storage), netscape cookies.txt.
#   Root's and the daemon user's only, never opened by shared_fleet.
@op("accounts_export")
async def accounts_export(self: Commands, args: dict[str, Any], peer: Peer) -> Any:
    name = name_arg(args)
    fmt = arg(args, "format", str, "json")
    if fmt not in FORMATS:
        raise BadArgs(f"argument 'format' must be one of {', '.join(FORMATS)}")
    try:
        session = await self.daemon.roster.export(name)
    except ValueError as exc:
        raise NotFound(f"account {name}: {exc}") from None
    if session is None:
        raise NotFound(f"account {name} has no stored session (import one, or sign it in with `tabfleetctl login --account {name}`)")
    text = cookiefile.to_json(session) if fmt == "json" else cookiefile.to_netscape(session)
    return {"name": name, "format": fmt, "text": text}


# accounts_remove {"name": str} -> {"name", "removed": bool, "workers": [int]}
#   deletes the stored session; the account's workers clear their browsers' cookies (and are signed out on the site)
@op("accounts_remove")
async def accounts_remove(self: Commands, args: dict[str, Any], peer: Peer) -> Any:
    d = self.daemon
    name = name_arg(args)
    removed = await d.roster.remove(name)
    told = await d.session_changed(name, unblock=False)
    return {"name": name, "removed": removed, "workers": told}
