"""Unit tests for the account files (tabfleetd.fleet.accounts) and the daemon's view of accounts (tabfleetd.fleet.roster)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from tabfleetd.fleet.accounts import AccountFiles, empty_record
from tabfleetd.fleet.roster import Roster

SESSION = {"cookies": [{"name": "s", "value": "v", "domain": "h.example", "path": "/", "secure": False, "httpOnly": True}],
           "origins": []}


def test_files_are_private_and_written_whole(tmp_path: Path) -> None:
    """The directory is 0700 and each file 0600 whatever the umask; no temp file is left; the record reads back."""
    files = AccountFiles(tmp_path / "accounts")
    old = os.umask(0)
    try:
        files.write("alice@example.com", empty_record("alice@example.com") | {"session": SESSION})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "accounts").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "accounts" / "alice@example.com.json").stat().st_mode) == 0o600
    assert os.listdir(tmp_path / "accounts") == ["alice@example.com.json"]
    assert files.read("alice@example.com")["session"] == SESSION
    assert files.names() == ["alice@example.com"]
    assert files.read("bob") is None and files.remove("bob") is False
    assert files.remove("alice@example.com") and files.names() == []


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 129, "a b"])
def test_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    """An account name cannot climb out of the directory or hide a file."""
    with pytest.raises(ValueError, match="account name"):
        AccountFiles(tmp_path).write(name, empty_record(name))


def test_a_symlink_or_hard_link_is_never_read_through(tmp_path: Path) -> None:
    """A link planted at an account's name is refused, not followed, and the file it points to is left alone."""
    directory = tmp_path / "accounts"
    files = AccountFiles(directory)
    files.write("alice", empty_record("alice"))
    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"session": {"cookies": []}}))
    (directory / "eve.json").symlink_to(secret)
    with pytest.raises(ValueError, match="symlink"):
        files.read("eve")
    os.link(secret, directory / "mallory.json")
    with pytest.raises(ValueError, match="not a plain file"):
        files.read("mallory")
    files.write("eve", empty_record("eve"))  # replaces the link itself
    assert not (directory / "eve.json").is_symlink() and json.loads(secret.read_text()) == {"session": {"cookies": []}}


def test_roster_states_follow_what_the_workers_meet(tmp_path: Path) -> None:
    """An auth answer signs the account out (in its file too), a finished task signs it in, an import resets it."""
    async def run() -> list[tuple[str, str | None]]:
        roster = Roster(tmp_path / "accounts")
        await roster.import_session("alice", SESSION)
        seen = [(roster.state("alice"), roster.get("alice").source)]
        await roster.outcome("alice", {"ok": False, "kind": "auth", "error": "logged out"})
        seen.append((roster.state("alice"), roster.get("alice").reason))
        await roster.outcome("alice", {"ok": False, "kind": "detached"})  # never reached the site: says nothing
        seen.append((roster.state("alice"), None))
        reloaded = Roster(tmp_path / "accounts")
        await reloaded.load()
        seen.append((reloaded.state("alice"), reloaded.get("alice").reason))
        await roster.outcome("alice", {"ok": True})
        seen.append((roster.state("alice"), roster.get("alice").reason))
        await roster.save_session("alice", SESSION | {"origins": [{"origin": "https://h.example", "localStorage": []}]},
                                  "login")
        seen.append((roster.state("alice"), roster.get("alice").source))
        await roster.flush()
        return seen

    assert asyncio.run(run()) == [("unknown", "import"), ("signed out", "logged out"), ("signed out", None),
                                  ("signed out", "logged out"), ("signed in", None), ("unknown", "login")]


def test_roster_lists_a_damaged_file_without_stopping(tmp_path: Path) -> None:
    """A file that is not a record is reported as damaged; the other accounts load."""
    async def run() -> tuple[str | None, int]:
        files = AccountFiles(tmp_path / "accounts")
        files.write("alice", empty_record("alice") | {"session": SESSION})
        (tmp_path / "accounts" / "bob.json").write_text("{not json")
        roster = Roster(tmp_path / "accounts")
        await roster.load()
        return roster.get("bob").damaged, roster.get("alice").cookies

    damaged, cookies = asyncio.run(run())
    assert damaged is not None and "not valid JSON" in damaged and cookies == 1
