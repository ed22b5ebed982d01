"""The socket directory check shared by tabfleetd and tabfleetctl, on made-up lstat results."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tabfleetd.protocol import check_socket_dir, socket_dir_problem, trusted_owners

ME, OTHER = 1000, 1001


def entry(path: str, mode: int, uid: int = 0, kind: int = stat.S_IFDIR) -> tuple[str, os.stat_result]:
    return path, os.stat_result((kind | mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


ROOT = entry("/", 0o755)
TMP = entry("/tmp", 0o1777)
RUN = entry("/run", 0o755)


@pytest.mark.parametrize("chain", [
    [ROOT, TMP, entry("/tmp/tabfleet-1000", 0o700, ME)],                     # made by its user in /tmp
    [ROOT, RUN, entry("/run/tabfleet", 0o750, OTHER)],                        # systemd's RuntimeDirectory, for a client
    [ROOT, entry("/home", 0o755), entry("/home/bob", 0o750, OTHER), entry("/home/bob/tf", 0o700, OTHER)],  # vouched
    [ROOT, TMP, entry("/tmp/tf-x", 0o755), entry("/tmp/tf-x/run", 0o750)],   # root's directory in /tmp
])
def test_client_accepts_directories_nobody_else_could_have_made(chain: list[tuple[str, os.stat_result]]) -> None:
    """A client trusts its own and root's directories, and any whose parents let only their owners create them."""
    assert socket_dir_problem(chain, {ME}, owner_must_be_trusted=False) is None


@pytest.mark.parametrize("chain, words", [
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o777, OTHER)], "belongs to uid 1001, not to root or uid 1000, and lies in /tmp"),
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o755, OTHER)], "where any user may create it first"),
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o777, ME)], "writable by its group and others (mode 0777)"),
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o770, ME)], "writable by its group (mode 0770)"),
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o777, ME, stat.S_IFLNK)], "is a symbolic link"),
    ([ROOT, TMP, entry("/tmp/tabfleet-1000", 0o600, ME, stat.S_IFREG)], "is not a directory"),
    ([ROOT, entry("/srv", 0o777), entry("/srv/tf", 0o700, ME)], "/srv is writable by its group and others"),
    ([ROOT, TMP, entry("/tmp/x", 0o755, OTHER), entry("/tmp/x/tf", 0o700, ME)], "/tmp/x belongs to uid 1001"),
])
def test_client_refuses_what_someone_else_controls(chain: list[tuple[str, os.stat_result]], words: str) -> None:
    """World- or group-writable, squatted in a sticky directory, a symlink or not a directory: refused with the reason."""
    problem = socket_dir_problem(chain, {ME}, owner_must_be_trusted=False)
    assert problem is not None and words in problem, problem


def test_daemon_wants_its_own_or_roots_directory() -> None:
    """The daemon refuses even a tidy directory of another uid, which /run/tabfleet-style vouching lets a client accept."""
    chain = [ROOT, RUN, entry("/run/tabfleet", 0o750, OTHER)]
    assert "belongs to uid 1001, not to root or uid 1000" in str(socket_dir_problem(chain, {ME}, owner_must_be_trusted=True))
    assert socket_dir_problem([ROOT, RUN, entry("/run/tabfleet", 0o750, 0)], {ME}, owner_must_be_trusted=True) is None


def test_trusted_owners_read_the_uid_in_the_default_name() -> None:
    """/tmp/tabfleet-N is trusted to belong to N (another user's daemon), besides the client itself."""
    assert trusted_owners(Path("/tmp/tabfleet-1001"), ME) == {ME, OTHER}
    assert trusted_owners(Path("/run/tabfleet"), ME) == {ME}
    assert trusted_owners(Path("/tmp/tabfleet-10x"), ME) == {ME}


def test_check_socket_dir_on_real_directories(tmp_path: Path) -> None:
    """The lstat walk: a missing directory is left to connect() to report; a world-writable one is refused."""
    assert check_socket_dir(tmp_path / "missing", {os.getuid()}, owner_must_be_trusted=True) is None
    wide = tmp_path / "wide"
    wide.mkdir()
    os.chmod(wide, 0o777)
    assert "writable by its group and others" in str(check_socket_dir(wide, {os.getuid()}, owner_must_be_trusted=True))
    os.chmod(wide, 0o700)
    link = tmp_path / "link"
    link.symlink_to(wide)
    assert "symbolic link" in str(check_socket_dir(link, {os.getuid()}, owner_must_be_trusted=True))
