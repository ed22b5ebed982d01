"""Socket directory squatting: a directory someone else controls is refused by the daemon and by tabfleetctl.

`shared` stands in for /tmp (mode 1777): there another user can create the
directory first, as /tmp/tabfleet-$UID, and listen in it to catch prompts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Run as the squatter: make DIR with MODE (or a symlink to a directory of his), listen on DIR/tabfleetd.sock (0777),
# and on stdin's close print how many bytes clients sent him.
SQUATTER = r"""
import os, select, socket, sys
directory, mode = sys.argv[1], sys.argv[2]
if mode == "symlink":
    os.mkdir(directory + ".real", 0o755)
    os.symlink(directory + ".real", directory)
else:
    os.mkdir(directory)
    os.chmod(directory, int(mode, 8))
path = os.path.join(directory, "tabfleetd.sock")
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o777)
server.listen(8)
print("listening", flush=True)
received = 0
while True:
    ready, _, _ = select.select([server, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    conn, _ = server.accept()
    conn.settimeout(2)
    try:
        while chunk := conn.recv(65536):
            received += len(chunk)
    except OSError:
        pass
    conn.close()
print(received, flush=True)
"""


@pytest.fixture
def shared(short_tmp: Path, users: Any) -> Path:
    """A directory like /tmp: anyone may create entries, only their owner may remove them."""
    os.chmod(short_tmp, 0o755)
    path = short_tmp / "shared"
    path.mkdir()
    os.chmod(path, 0o1777)
    return path


class Squatter:
    def __init__(self, users: Any, directory: Path, mode: str) -> None:
        self.proc = subprocess.Popen([*users.prefix(users.mallory), sys.executable, "-c", SQUATTER, str(directory), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "listening"  # type: ignore[union-attr]

    def received(self) -> int:
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip())


def tabfleetctl(socket_path: Path, *args: str, user: list[str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(user or []), sys.executable, "-m", "tabfleetctl", "--socket", str(socket_path), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("mode", ["0777", "0755", "symlink"])
def test_a_squatted_socket_dir_is_refused_by_both_sides(make_daemon: Any, shared: Path, users: Any, mode: str) -> None:
    """Another user's tabfleet-0 (world-writable, merely theirs, or a symlink): tabfleetd exits 78, tabfleetctl exits 6, nothing leaks."""
    directory = shared / "tabfleet-0"
    squatter = Squatter(users, directory, mode)
    daemon = make_daemon(workers=1, start=False)
    daemon.socket = directory / "tabfleetd.sock"
    (daemon.work / "p.txt").write_text("the launch codes\n")
    started = subprocess.run(daemon.argv(), capture_output=True, text=True, timeout=60)
    assert started.returncode == 78, started.stderr
    assert f"refusing the control socket's directory: {directory}" in started.stderr
    submitted = tabfleetctl(directory / "tabfleetd.sock", "submit", "p.txt", cwd=daemon.work)
    assert submitted.returncode == 6 and "refusing to use the socket" in submitted.stderr, submitted.stderr
    assert squatter.received() == 0


def test_a_squatted_dir_named_for_another_user_is_refused_by_that_user(shared: Path, users: Any) -> None:
    """/tmp/tabfleet-N made by someone other than uid N: uid N's tabfleetctl refuses it, though the mode looks tidy."""
    directory = shared / f"tabfleet-{users.alice}"
    squatter = Squatter(users, directory, "0755")
    refused = tabfleetctl(directory / "tabfleetd.sock", "ping", user=users.prefix(users.alice))
    assert refused.returncode == 6, refused.stderr
    assert f"belongs to uid {users.mallory}, not to root or uid {users.alice}" in refused.stderr
    assert squatter.received() == 0


def test_socket_group_works_outside_systemd(make_daemon: Any, shared: Path, users: Any) -> None:
    """The daemon makes its socket dir 0750 with socket_group: members get in (by their real groups), others do not."""
    directory = shared / "tabfleet-0"
    daemon = make_daemon(workers=1, start=False, config={"socket_group": str(users.gid)})
    daemon.socket = directory / "tabfleetd.sock"
    daemon.start()
    st = directory.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, users.gid, 0o750)
    assert tabfleetctl(daemon.socket, "ping", user=users.member(users.alice)).returncode == 0
    outsider = tabfleetctl(daemon.socket, "ping", user=users.prefix(users.trudy))
    assert outsider.returncode == 3 and "no permission" in outsider.stderr


def test_a_systemd_style_runtime_dir_still_works(make_daemon: Any, short_tmp: Path, users: Any) -> None:
    """/run/tabfleet-style: made beforehand by root, group tabfleet, 0750, under a root-only parent: used as it is."""
    os.chmod(short_tmp, 0o755)
    directory = short_tmp / "run" / "tabfleet"
    directory.mkdir(parents=True)
    os.chown(directory, 0, users.gid)
    os.chmod(directory, 0o750)
    daemon = make_daemon(workers=1, start=False, config={"socket_group": str(users.gid)})
    daemon.socket = directory / "tabfleetd.sock"
    daemon.start()
    assert directory.stat().st_mode & 0o777 == 0o750
    assert tabfleetctl(daemon.socket, "ping", user=users.member(users.alice)).returncode == 0
