"""The state dir is private whatever the umask: 0700 directories, 0600 files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabfleetd.files import statedir
from tabfleetd.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_prepare_and_tighten_fix_what_an_older_version_left(tmp_path: Path, loose_umask: None) -> None:
    """A readable state dir with readable files and subdirs becomes 0700/0600, three levels down; symlinks are left alone."""
    state = tmp_path / "state"
    (state / "profiles" / "worker-1" / "Default").mkdir(parents=True)
    (state / "profiles" / "worker-1" / "Cookies").write_text("session")
    (state / "store").mkdir()
    (state / "store" / "data.mdb").write_text("prompts")
    outside = tmp_path / "outside"
    outside.mkdir()
    (state / "elsewhere").symlink_to(outside)
    statedir.prepare(state)
    statedir.tighten(state)
    assert mode(state) == 0o700 and mode(outside) == 0o755
    for name in statedir.SUBDIRS + ("profiles/worker-1", "profiles/worker-1/Default"):
        assert mode(state / name) == 0o700, name
    for name in ("store/data.mdb", "profiles/worker-1/Cookies"):
        assert mode(state / name) == 0o600, name


def test_private_opener_under_a_loose_umask(tmp_path: Path, loose_umask: None) -> None:
    """A file made or reopened through the opener is 0600."""
    made = tmp_path / "made.log"
    with open(made, "w", opener=statedir.private_opener) as f:
        f.write("x")
    found = tmp_path / "found.log"
    found.write_text("y")
    os.chmod(found, 0o644)
    with open(found, "a", opener=statedir.private_opener):
        pass
    assert mode(made) == 0o600 and mode(found) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the state dir to another uid needs root")
def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    """The daemon does not take over (and chmod) a directory that belongs to someone else."""
    state = tmp_path / "theirs"
    state.mkdir()
    os.chown(state, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        statedir.prepare(state)
    assert mode(state) == 0o755
