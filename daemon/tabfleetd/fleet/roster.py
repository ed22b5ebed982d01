"""The daemon's accounts: what it knows of each (state, last use, session size), kept in memory and in its file.

An account is known when it has a file (an imported, saved or logged-in session) or a worker bound to it.
Its state comes from what its workers meet: a finished task means signed in, an `auth` answer signed out, a
bot check that did not clear challenged; a new session (import, login) makes it unknown again until used.
Files are written off the event loop, one write at a time; the last use is written with the next write of
the file and when the daemon stops, not after every task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .accounts import CHALLENGED, SIGNED_IN, SIGNED_OUT, UNKNOWN, AccountFiles, empty_record

log = logging.getLogger(__name__)

OUTCOME_STATES = {"auth": SIGNED_OUT, "challenge": CHALLENGED}


@dataclass
class Account:
    name: str
    state: str = UNKNOWN
    reason: str | None = None
    last_used: float | None = None
    saved: float | None = None  # when its session was last stored
    source: str | None = None  # where that session came from: import, login, worker N
    cookies: int = 0
    origins: int = 0
    has_file: bool = False
    damaged: str | None = None  # its file cannot be read
    dirty: bool = False  # last_used changed since the file was written

    def meta(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "last_used": self.last_used, "saved": self.saved,
                "source": self.source}


class Roster:
    def __init__(self, directory: Path) -> None:
        self.files = AccountFiles(directory)
        self.accounts: dict[str, Account] = {}
        self.lock = asyncio.Lock()

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def load(self) -> None:
        """Read every account file once, at start."""
        for name in await self.run(self.files.names):
            account = self.get(name)
            try:
                record = await self.run(self.files.read, name)
            except (OSError, ValueError) as exc:
                account.damaged = str(exc)
                log.error("account %s: %s", name, exc)
                continue
            if record is not None:
                self.take(account, record)
        log.info("%d accounts with a stored session", sum(a.has_file for a in self.accounts.values()))

    @staticmethod
    def take(account: Account, record: dict[str, Any]) -> None:
        session = record.get("session") or {}
        account.state = record.get("state") or UNKNOWN
        account.reason = record.get("reason")
        account.last_used = record.get("last_used")
        account.saved = record.get("saved")
        account.source = record.get("source")
        account.cookies = len(session.get("cookies") or [])
        account.origins = len(session.get("origins") or [])
        account.has_file, account.damaged = True, None

    def get(self, name: str) -> Account:
        if name not in self.accounts:
            self.accounts[name] = Account(name)
        return self.accounts[name]

    def state(self, name: str) -> str:
        return self.get(name).state

    async def write(self, name: str, session: dict[str, Any] | None = None, **meta: Any) -> None:
        """Write the account's file with `meta` changed and, when given, a new session (else the stored one kept)."""
        account = self.get(name)
        async with self.lock:
            record = empty_record(name)
            if session is None and account.has_file:
                record = await self.run(self.files.read, name) or record
            if session is not None:
                record["session"] = session
            for key, value in meta.items():
                setattr(account, key, value)
            record.update(account.meta())
            await self.run(self.files.write, name, record)
            self.take(account, record)
            account.dirty = False

    # -- what workers meet ---------------------------------------------------

    async def outcome(self, name: str, msg: dict[str, Any]) -> None:
        """A task's result on one of the account's workers."""
        account = self.get(name)
        if msg.get("kind") in ("detached", "aborted"):
            return  # it never reached the site, or was stopped before its answer: it says nothing of the account
        account.last_used, account.dirty = time.time(), True
        state = SIGNED_IN if msg.get("ok") else OUTCOME_STATES.get(str(msg.get("kind")))
        if state is None or (state == account.state and state == SIGNED_IN):
            return
        reason = None if state == SIGNED_IN else str(msg.get("error") or "")[:300]
        if state != SIGNED_IN:
            log.warning("account %s is %s: %s", name, state, reason)
        account.state, account.reason = state, reason
        if account.has_file:
            await self.safely(self.write(name))

    async def save_session(self, name: str, session: dict[str, Any], source: str) -> None:
        """A worker read the account's session back from its browser (after tasks, at rotation, from a login window)."""
        meta: dict[str, Any] = {"saved": time.time(), "source": source}
        if source == "login":
            meta |= {"state": UNKNOWN, "reason": None}
        await self.safely(self.write(name, session, **meta))

    async def safely(self, work: Any) -> None:
        """A write that fails (a full disk) costs the account its newest session, not the daemon."""
        try:
            await work
        except (OSError, ValueError) as exc:
            log.error("could not write an account's file: %s", exc)

    # -- the operator's commands ------------------------------------------------

    async def import_session(self, name: str, session: dict[str, Any]) -> None:
        await self.write(name, session, saved=time.time(), source="import", state=UNKNOWN, reason=None)

    async def export(self, name: str) -> dict[str, Any] | None:
        record = await self.run(self.files.read, name)
        return None if record is None else record["session"]

    async def remove(self, name: str) -> bool:
        async with self.lock:
            removed = await self.run(self.files.remove, name)
        account = self.get(name)
        account.has_file, account.cookies, account.origins, account.saved, account.source = False, 0, 0, None, None
        account.state, account.reason, account.damaged = UNKNOWN, None, None
        return removed

    async def flush(self) -> None:
        """Write the last use of accounts used since their file was written (at shutdown)."""
        for account in list(self.accounts.values()):
            if account.dirty and account.has_file:
                await self.safely(self.write(account.name))

    def view(self, name: str) -> dict[str, Any]:
        a = self.get(name)
        return {"name": a.name, "state": a.state, "reason": a.reason, "last_used": a.last_used, "saved": a.saved,
                "source": a.source, "cookies": a.cookies, "origins": a.origins, "stored": a.has_file, "damaged": a.damaged}
