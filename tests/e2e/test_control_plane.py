"""Bad input on the control socket: every case gets an error or a closed connection, never a dead daemon."""

from __future__ import annotations

import os
import socket
import stat
import struct
import time
from typing import Any

import msgpack
import pytest

from tabfleetd import protocol
from tabfleetctl.client import Client, DaemonError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DAEMON_WORKERS = 1
DAEMON_CONFIG = {"read_timeout_s": 1.0, "hello_timeout_s": 1.0, "max_connections": 4, "max_frame_bytes": 1024 * 1024}


@pytest.fixture
def shared(module_daemon: Any) -> Any:
    """The module's daemon."""
    return module_daemon


def raw(daemon: Any) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    return sock


def read_reply(sock: socket.socket) -> dict[str, Any] | None:
    """The next reply frame, or None when the daemon closed the connection."""
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (length,) = struct.unpack(">I", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return msgpack.unpackb(body, raw=False)


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def hello(sock: socket.socket) -> None:
    sock.sendall(protocol.encode(protocol.request("hello", {"version": protocol.PROTOCOL_VERSION}, 1)))
    reply = read_reply(sock)
    assert reply is not None and reply["ok"], reply


def still_answers(daemon: Any) -> None:
    with Client(daemon.socket, 10) as client:
        assert client.call("ping")["pong"] is True


def test_socket_is_private(shared: Any) -> None:
    """The control socket is mode 0600 when no group is configured."""
    assert stat.S_IMODE(os.stat(shared.socket).st_mode) == 0o600


def test_oversized_header_refused_before_body(shared: Any) -> None:
    """A length header over the limit gets an error reply at once and the connection is closed."""
    with raw(shared) as sock:
        sock.sendall(struct.pack(">I", 0xFFFFFFF0))
        reply = read_reply(sock)
        assert reply is not None and reply["ok"] is False and reply["error"]["code"] == 1101
        assert "over the limit" in reply["error"]["message"]
        assert closed(sock)
    still_answers(shared)


@pytest.mark.parametrize("body", [b"\xc1\xc1\xc1", b"\x93\x01\x02\x03", msgpack.packb("just a string"),
                                  msgpack.packb({1: 2}), b"\xdf\xff\xff\xff\xff"])
def test_undecodable_or_non_map_frames(shared: Any, body: bytes) -> None:
    """Garbage, arrays, strings, integer-keyed maps and lying map headers get an error reply and a closed connection."""
    with raw(shared) as sock:
        sock.sendall(struct.pack(">I", len(body)) + body)
        reply = read_reply(sock)
        assert reply is not None and reply["ok"] is False and reply["error"]["code"] == 1100
        assert closed(sock)
    still_answers(shared)


def test_requests_before_hello_and_wrong_version(shared: Any) -> None:
    """A request before hello is refused, and a client of another protocol version is told so clearly."""
    with raw(shared) as sock:
        sock.sendall(protocol.encode(protocol.request("status", {}, 7)))
        reply = read_reply(sock)
        assert reply is not None and reply["id"] == 7 and reply["error"]["code"] == 1203
        sock.sendall(protocol.encode(protocol.request("hello", {"version": 99}, 8)))
        reply = read_reply(sock)
        assert reply is not None and reply["error"]["code"] == 1203
        assert "protocol 1" in reply["error"]["message"] and "99" in reply["error"]["message"]
    still_answers(shared)


@pytest.mark.parametrize("request_map, code, words", [
    ({"op": "no-such-op", "args": {}, "id": 2}, 1201, "unknown op"),
    ({"op": "status", "args": {"job": 42}, "id": 3}, 1202, "'job'"),
    ({"op": "pause", "args": {}, "id": 4}, 1202, "missing argument 'job'"),
    ({"op": "submit", "args": {"filename": "x.txt"}, "id": 5}, 1202, "missing argument 'data'"),
    ({"op": "submit", "args": {"filename": "x.txt", "data": b"a\n", "workers": "many"}, "id": 6}, 1202, "'workers'"),
    ({"op": "submit", "args": {"filename": "x.txt", "data": b"a\n", "knobs": {"warp": "9"}}, "id": 7}, 1202, "unknown site knob 'warp'"),
    ({"op": "submit", "args": {"filename": "x.txt", "data": b"a\n", "site": "nowhere"}, "id": 8}, 1202, "unknown site 'nowhere'"),
    ({"op": "submit", "args": {"filename": "x.txt", "data": b"\n\n# only a comment\n"}, "id": 9}, 1401, "no prompts"),
    ({"op": "resume", "args": {"job": "nope"}, "id": 10}, 1301, "no job 'nope'"),
])
def test_bad_requests_get_error_replies(shared: Any, request_map: dict[str, Any], code: int, words: str) -> None:
    """Unknown ops, wrong types, missing arguments and unknown jobs get a numbered error; the connection stays usable."""
    with raw(shared) as sock:
        hello(sock)
        sock.sendall(protocol.encode(request_map))
        reply = read_reply(sock)
        assert reply is not None and reply["ok"] is False and reply["id"] == request_map["id"]
        assert reply["error"]["code"] == code and words in reply["error"]["message"], reply
        sock.sendall(protocol.encode(protocol.request("ping", {}, 99)))
        reply = read_reply(sock)
        assert reply is not None and reply["ok"] is True and reply["id"] == 99
    assert shared.call("status")["jobs"] == []


def test_silent_and_slow_clients_are_dropped(shared: Any) -> None:
    """A client that sends nothing, or stops halfway through a frame, is disconnected after the read deadline."""
    with raw(shared) as quiet, raw(shared) as halfway:
        halfway.sendall(struct.pack(">I", 100) + b"\x81")
        started = time.monotonic()
        assert closed(quiet) and closed(halfway)
        assert time.monotonic() - started < 5
    still_answers(shared)


def test_connection_cap(shared: Any) -> None:
    """Beyond max_connections the oldest idle connection is closed with a busy frame to make room for the new one."""
    hogs: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 5
        while len(hogs) < DAEMON_CONFIG["max_connections"]:
            sock = raw(shared)
            try:
                hello(sock)  # connections of earlier tests may take a moment to be released
                hogs.append(sock)
            except (BrokenPipeError, ConnectionResetError, AssertionError):
                sock.close()
                assert time.monotonic() < deadline, "the daemon never served max_connections clients at once"
                time.sleep(0.05)
        with raw(shared) as extra:
            hello(extra)
            reply = read_reply(hogs[0])
            assert reply is not None and reply["error"]["code"] == 1205 and "idle" in reply["error"]["message"], reply
            assert closed(hogs[0])
            extra.sendall(protocol.encode(protocol.request("ping", {}, 2)))
            assert read_reply(extra)["ok"]  # type: ignore[index]
    finally:
        for sock in hogs:
            sock.close()
    still_answers(shared)


def test_big_but_allowed_frame_with_bad_prompt_file(shared: Any) -> None:
    """A large undecodable prompt file within the frame limit is refused with its line, and nothing is queued."""
    data = b"fine prompt\n" * 1000 + b"bad \xff byte\n"
    with Client(shared.socket, 10) as client:
        with pytest.raises(DaemonError) as err:
            client.call("submit", {"filename": "big.txt", "data": data})
    assert err.value.code == 1401 and "big.txt line 1001" in str(err.value)
    assert shared.call("status")["jobs"] == []
