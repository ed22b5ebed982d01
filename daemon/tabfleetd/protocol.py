"""The wire protocol between tabfleetctl and tabfleetd, without any socket I/O.

Each message is a 4-byte big-endian length followed by one msgpack map.

    request  {"op": str, "args": map, "id": int}
    reply    {"id": int, "ok": true, "result": any}
           | {"id": int|nil, "ok": false, "error": {"code": int, "message": str}}
    stream   {"id": int, "ok": true, "result": any, "more": true} ... then
             {"id": int, "ok": true, "result": nil, "more": false} (or an error reply)

A streaming op (``subscribe``, ``export``) answers with many frames under its
request's id; the client stops a stream early by closing the connection.

The first request on a connection must be ``hello`` carrying the client's
protocol version; the daemon refuses anything else until then.  The same
framing (length + msgpack map) carries daemon <-> worker messages.

Before hello a frame may hold at most HELLO_MAX_FRAME bytes.  Both sides
check the socket's directory with ``socket_dir_problem`` before they trust it.

This module is imported by tabfleetctl, so it may import only the standard
library, msgpack and ``tabfleetd.errors``.  Its only I/O is ``lstat`` in
``check_socket_dir``.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack

from .errors import FrameTooLarge, ProtocolError

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HELLO_MAX_FRAME = 64 * 1024  # a hello is a few dozen bytes; nothing bigger is read from a client that has not said it
SOCKET_NAME = "tabfleetd.sock"


def encode(msg: Mapping[str, Any]) -> bytes:
    """Return one frame: the length header and the packed map."""
    body = msgpack.packb(msg, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def body_length(header: bytes, limit: int = DEFAULT_MAX_FRAME) -> int:
    """Read a frame header; refuse a length over ``limit`` before any body is read."""
    if len(header) != HEADER.size:
        raise ProtocolError(f"truncated frame header ({len(header)} of {HEADER.size} bytes)")
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise FrameTooLarge(f"frame of {length} bytes is over the limit of {limit} bytes")
    return length


def decode(body: bytes) -> dict[str, Any]:
    """Unpack one frame body into a map, or raise ProtocolError."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types for bad input
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a frame must hold a map, not {type(msg).__name__}")
    return msg


def request(op: str, args: Mapping[str, Any] | None = None, msg_id: int = 0) -> dict[str, Any]:
    return {"op": op, "args": dict(args or {}), "id": msg_id}


def ok_reply(msg_id: int | None, result: Any) -> dict[str, Any]:
    return {"id": msg_id, "ok": True, "result": result}


def error_reply(msg_id: int | None, code: int, message: str) -> dict[str, Any]:
    return {"id": msg_id, "ok": False, "error": {"code": code, "message": message}}


def parse_request(msg: Mapping[str, Any]) -> tuple[str, dict[str, Any], int | None]:
    """Check a request's shape and return (op, args, id)."""
    msg_id = msg.get("id")
    if msg_id is not None and (not isinstance(msg_id, int) or isinstance(msg_id, bool)):
        raise ProtocolError("request 'id' must be an integer")
    op = msg.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError("request needs an 'op' string")
    args = msg.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError("request 'args' must be a map")
    return op, args, msg_id


def resolve_socket_path(explicit: str | None, env: Mapping[str, str], uid: int) -> Path:
    """The daemon's control socket: the first of socket_candidates (never the service's, unless systemd names it)."""
    return socket_candidates(explicit, env, uid)[0]


SERVICE_SOCKET = Path("/run/tabfleet") / SOCKET_NAME  # the systemd unit's RuntimeDirectory=tabfleet


def socket_candidates(explicit: str | None, env: Mapping[str, str], uid: int) -> list[Path]:
    """Where the control socket may be, in the order both sides look.

    --socket, or else $TABFLEET_SOCKET, is the only candidate when given.
    Otherwise: $RUNTIME_DIRECTORY (systemd), $XDG_RUNTIME_DIR/tabfleet,
    /tmp/tabfleet-$UID, and last the system service's /run/tabfleet.  A
    daemon takes the first; a client uses the first that exists, so an
    operator reaches the service without exporting anything, while their own
    daemon, if they run one, still comes first.
    """
    if explicit:
        return [Path(explicit)]
    if env.get("TABFLEET_SOCKET"):
        return [Path(env["TABFLEET_SOCKET"])]
    found = []
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may list several directories separated by colons; the first is ours
        found.append(Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / SOCKET_NAME)
    if env.get("XDG_RUNTIME_DIR"):
        found.append(Path(env["XDG_RUNTIME_DIR"]) / "tabfleet" / SOCKET_NAME)
    return found + [Path(f"/tmp/tabfleet-{uid}") / SOCKET_NAME, SERVICE_SOCKET]



_OWNER_IN_NAME = re.compile(r"tabfleet-([0-9]+)")


def trusted_owners(directory: Path, uid: int) -> set[int]:
    """The uids a client trusts to own the socket's directory: itself, and N for the default /tmp/tabfleet-N."""
    named = _OWNER_IN_NAME.fullmatch(directory.name)
    return {uid} | ({int(named.group(1))} if named else set())


def socket_dir_problem(chain: Sequence[tuple[str, os.stat_result]], trusted: Collection[int],
                       owner_must_be_trusted: bool) -> str | None:
    """Why the socket's directory cannot be trusted, or None when it can.

    `chain` holds the lstat of each directory from / down to the socket's own
    directory (the last entry); the ancestors are given resolved.  Whoever can
    replace a directory on that path can put their own socket in it and read
    every request sent to it, so:

    - each entry is a real directory (a symlink is refused);
    - none is writable by its group or others, except an ancestor with the
      sticky bit (such as /tmp), where only an entry's owner may replace it;
    - an entry inside such a shared directory belongs to root or a trusted uid
      (anyone else may have made it first: squatting);
    - with `owner_must_be_trusted` (the daemon), the socket's directory belongs
      to root or a trusted uid; otherwise (a client) any owner is accepted when
      nobody else could have made it, as with systemd's /run/tabfleet.
    """
    owners = {0, *trusted}
    shared_parent: str | None = None  # the ancestor anyone may create entries in, if the previous one is
    for depth, (path, st) in enumerate(chain):
        last = depth == len(chain) - 1
        if stat.S_ISLNK(st.st_mode):
            return f"{path} is a symbolic link, not a directory"
        if not stat.S_ISDIR(st.st_mode):
            return f"{path} is not a directory"
        if shared_parent is not None and st.st_uid not in owners:
            return (f"{path} belongs to uid {st.st_uid}, not to {_owners(trusted)}, and lies in {shared_parent}, "
                    f"where any user may create it first")
        if last and owner_must_be_trusted and st.st_uid not in owners:
            return f"{path} belongs to uid {st.st_uid}, not to {_owners(trusted)}"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (last or not st.st_mode & stat.S_ISVTX):
            who = "its group and others" if writable == stat.S_IWGRP | stat.S_IWOTH else \
                "its group" if writable == stat.S_IWGRP else "others"
            return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}), who could replace the socket"
        shared_parent = path if writable else None
    return None


def _owners(trusted: Collection[int]) -> str:
    others = sorted(u for u in trusted if u != 0)
    return "root" + (" or uid " + " or ".join(map(str, others)) if others else "")


def check_socket_dir(directory: Path, trusted: Collection[int], owner_must_be_trusted: bool) -> str | None:
    """lstat the socket's directory and its (resolved) ancestors and check them.

    None also when a directory cannot be looked at (missing, no permission):
    then connecting or binding fails too, and says so itself.
    """
    parts = Path(os.path.realpath(directory.parent)).parts
    paths = [os.path.join(*parts[:i]) for i in range(1, len(parts) + 1)]
    try:
        chain = [(p, os.lstat(p)) for p in paths] + [(str(directory), os.lstat(directory))]
    except OSError:
        return None
    return socket_dir_problem(chain, trusted, owner_must_be_trusted)
