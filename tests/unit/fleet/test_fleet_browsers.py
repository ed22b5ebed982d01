"""Unit tests for the fleet's view of browsers and accounts: reconnecting workers and signed-out accounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabfleetd.settings.config import load
from tabfleetd.fleet.fleet import BLOCKED, BUSY, IDLE, RECONNECTING, Fleet, WorkerHandle


async def _nothing(*args: Any) -> None:
    return None


def fleet(tmp_path: Path) -> Fleet:
    return Fleet(load(None, {"state_dir": tmp_path}, {}, tmp_path), "chromium", _nothing, _nothing)


def test_a_worker_that_lost_its_browser_takes_no_task_until_its_next_hello(tmp_path: Path) -> None:
    """Idle: reconnecting at once; busy: its task ends first, then reconnecting; health names host and reason."""
    f = fleet(tmp_path)
    idle = WorkerHandle(1, state=IDLE, endpoint="ws://10.0.0.5:9222", browser_kind="remote")
    busy = WorkerHandle(2, state=BUSY, endpoint="ws://10.0.0.5:9222", browser_kind="remote", task={"job": "j", "index": 1})
    f.workers = {1: idle, 2: busy}
    for handle in (idle, busy):
        f.reconnecting(handle, {"state": "reconnecting", "error": "connection refused", "retry_in_s": 4})
    assert (idle.state, busy.state) == (RECONNECTING, BUSY)
    assert f.idle() == []
    assert idle.health().startswith("reconnecting to ws://10.0.0.5:9222: connection refused; next try in ")
    busy.task = None
    f.task_ended(busy)
    assert busy.state == RECONNECTING
    view = idle.view()["browser"]
    assert view == {"kind": "remote", "endpoint": "ws://10.0.0.5:9222", "connection": "reconnecting", "reconnects": 0,
                    "error": "connection refused"}


def test_a_signed_out_account_stops_its_own_workers_only(tmp_path: Path) -> None:
    """block_account stops the idle workers of that account; a new session frees them; other accounts carry on."""
    f = fleet(tmp_path)
    a1, a2 = WorkerHandle(1, state=IDLE, account_name="alice"), WorkerHandle(2, state=IDLE, account_name="alice")
    b = WorkerHandle(3, state=IDLE, account_name="bob")
    f.workers = {1: a1, 2: a2, 3: b}
    assert [h.wid for h in f.block_account("alice", "signed out")] == [1, 2]
    assert (a1.state, a2.state, b.state) == (BLOCKED, BLOCKED, IDLE) and f.idle() == [b]
    assert [h.wid for h in f.unblock_account("alice")] == [1, 2]
    assert (a1.state, a2.state, a1.blocked_reason) == (IDLE, IDLE, None)
    assert [h.wid for h in f.of_account("alice")] == [1, 2] and WorkerHandle(4).account == "worker-4"
