"""The orphan sweep: adopted zombies are reaped, a claimed child only through its owner's poll, our session's never."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Run in a process of its own: becoming a subreaper lasts for the life of the process that asks.
SCENARIO = textwrap.dedent("""
    import json, os, sys, time
    from tabfleetd.fleet import reaper
    from tabfleetd.fleet.browser import ChildProcess

    def zombie(pid):
        found = reaper.state_and_session(pid)
        return found is not None and found[0] == "Z"

    def wait_zombie(pid):
        for _ in range(500):
            if zombie(pid):
                return
            time.sleep(0.01)
        raise SystemExit(f"{pid} never became a zombie")

    out = {"subreaper": reaper.become_subreaper()}
    # An orphan: a child in a session of its own forks a grandchild and exits; the grandchild comes to us.
    read, write = os.pipe()
    leader = os.fork()
    if leader == 0:
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(0.3)
            os._exit(0)
        os.write(write, str(grandchild).encode())
        os._exit(0)
    orphan = int(os.read(read, 32))
    os.waitpid(leader, 0)
    wait_zombie(orphan)
    out["orphan_adopted"] = orphan in reaper.child_pids()
    # A claimed child in a session of its own: the sweep reaps it through its owner's poll, which keeps the code.
    owned_pid = os.fork()
    if owned_pid == 0:
        os.setsid()
        os._exit(7)
    owned = ChildProcess(owned_pid)
    wait_zombie(owned_pid)
    # A plain child in our own session: its owner's to wait for, never the sweep's.
    ours = os.fork()
    if ours == 0:
        os._exit(3)
    wait_zombie(ours)
    out["reaped"] = sorted(reaper.reap_orphans())
    out["orphan"], out["ours"] = orphan, ours
    out["owned_code"] = owned.returncode
    out["ours_still_zombie"] = zombie(ours)
    out["ours_code"] = os.waitstatus_to_exitcode(os.waitpid(ours, 0)[1])
    print(json.dumps(out))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's")
def test_sweep_reaps_adopted_orphans_and_leaves_owned_children_to_their_owners() -> None:
    """An adopted orphan is reaped; a claimed child is reaped by its own poll (exit code kept); our session's is left."""
    result = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["subreaper"] and out["orphan_adopted"], out
    assert out["reaped"] == [out["orphan"]], out
    assert out["owned_code"] == 7, out
    assert out["ours_still_zombie"] and out["ours_code"] == 3, out
