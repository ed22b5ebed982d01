"""Who gets a control connection when they run short, and who may hold big request bodies: the rules on their own."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tabfleetd.settings.config import Config
from tabfleetd.control.server import ByteBudget, Conn, ControlServer, Peer

ALICE, BOB = 1000, 2000  # neither root nor the daemon's user


def server(**limits: Any) -> ControlServer:
    config = Config(socket=Path("/nonexistent/s.sock"), state_dir=Path("/nonexistent"),
                    **{"max_connections": 6, "reserved_connections": 2, "max_connections_per_uid": 3} | limits)

    async def handler(op: str, args: dict[str, Any], peer: Peer) -> Any:
        return None

    return ControlServer(config.socket, config, handler)


def conn(srv: ControlServer, uid: int, opened: float, greeted: bool = True, busy: bool = False) -> Conn:
    c = Conn(Peer(1, uid, uid, greeted), socket.socket(socket.AF_UNIX), opened, busy=busy)
    c.sock.close()
    srv.connections.add(c)
    return c


def test_a_user_at_its_cap_loses_its_own_silent_then_idle_connection() -> None:
    """The oldest connection that never said hello goes first, then the oldest idle one; busy ones never."""
    srv = server()
    idle = conn(srv, ALICE, 1.0)
    silent = conn(srv, ALICE, 2.0, greeted=False)
    conn(srv, ALICE, 0.5, busy=True)
    assert srv._make_room(Peer(9, ALICE, ALICE)) is None
    assert silent.dropped and not idle.dropped
    conn(srv, ALICE, 3.0, busy=True)
    assert srv._make_room(Peer(9, ALICE, ALICE)) is None
    assert idle.dropped


def test_a_user_whose_connections_are_all_at_work_is_refused() -> None:
    """Three busy connections (a stream, a request): the fourth is refused, naming the per-uid cap."""
    srv = server()
    for t in range(3):
        conn(srv, ALICE, t, busy=True)
    assert "max_connections_per_uid" in str(srv._make_room(Peer(9, ALICE, ALICE)))
    assert srv._make_room(Peer(9, BOB, BOB)) is None, "another user is not held to Alice's cap"


def test_reserved_connections_are_for_root_and_the_daemons_user() -> None:
    """With 4 of 6 busy, other users are refused; root still gets the two reserved ones, and then is refused too."""
    srv = server()
    for t, uid in enumerate((ALICE, ALICE, BOB, BOB)):
        conn(srv, uid, t, busy=True)
    assert "max_connections" in str(srv._make_room(Peer(9, 3000, 3000)))
    assert srv._make_room(Peer(9, 0, 0)) is None
    conn(srv, 0, 5, busy=True)
    conn(srv, 0, 6, busy=True)
    assert "max_connections" in str(srv._make_room(Peer(9, 0, 0)))


def test_when_full_the_oldest_idle_connection_of_anyone_makes_room() -> None:
    """All full, one of them idle: it is dropped (its client is told busy and reconnects) for the newcomer."""
    srv = server()
    conns = [conn(srv, uid, t, busy=(t != 2)) for t, uid in enumerate((ALICE, ALICE, BOB, BOB))]
    assert srv._make_room(Peer(9, 3000, 3000)) is None
    assert [c.dropped for c in conns] == [False, False, True, False]


def test_byte_budget_in_all_and_per_user() -> None:
    """A user may hold half the budget; root more; nobody past the total; bytes given back are free again."""
    budget = ByteBudget(total=100, per_uid=50)
    assert budget.take(ALICE, 40) and not budget.take(ALICE, 20)
    assert budget.take(BOB, 50) and not budget.take(0, 20)
    assert budget.take(0, 10)
    budget.give(ALICE, 40)
    assert budget.take(0, 40) and budget.used == 100
