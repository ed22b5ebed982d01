"""Unit tests for tabfleetd.protocol: framing, decoding, request checks and the socket path."""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack
import pytest

from tabfleetd import protocol
from tabfleetd.errors import FrameTooLarge, ProtocolError
from tabfleetd.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    SOCKET_NAME,
    body_length,
    decode,
    encode,
    error_reply,
    ok_reply,
    parse_request,
    request,
    resolve_socket_path,
    socket_candidates,
)

# --- encode / decode ------------------------------------------------------------


def _roundtrip(msg: dict) -> dict:
    frame = encode(msg)
    length = body_length(frame[: HEADER.size])
    body = frame[HEADER.size:]
    assert length == len(body)
    return decode(body)


def test_header_is_four_byte_big_endian_length() -> None:
    """A frame starts with the body length as a 4-byte big-endian integer."""
    frame = encode({"op": "hello"})
    assert HEADER.size == 4
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert msgpack.unpackb(frame[4:], raw=False) == {"op": "hello"}


def test_roundtrip_plain_request() -> None:
    """A request survives encode then decode unchanged."""
    msg = request("submit", {"file": "prompts.txt", "workers": 3, "knobs": {"seed": "7"}}, msg_id=42)
    assert _roundtrip(msg) == {"op": "submit", "args": {"file": "prompts.txt", "workers": 3, "knobs": {"seed": "7"}},
                               "id": 42}


def test_roundtrip_keeps_bytes_and_str_apart() -> None:
    """Bytes values come back as bytes and strings as strings, including non-ASCII ones."""
    payload = bytes(range(256))
    msg = {"t": "result", "data": payload, "empty": b"", "text": "héllo ✓", "nested": {"blob": b"\x00\xff"}}
    out = _roundtrip(msg)
    assert out == msg
    assert isinstance(out["data"], bytes) and isinstance(out["text"], str)
    assert isinstance(out["nested"]["blob"], bytes)


def test_roundtrip_mixed_value_types() -> None:
    """Lists, floats, booleans, nil and big integers keep their values."""
    msg = {"l": [1, "two", 3.5, None, True, False], "big": 2**63 - 1, "neg": -(2**40), "f": 0.1}
    assert _roundtrip(msg) == msg


def test_replies_roundtrip() -> None:
    """ok and error replies have the documented shape and survive the wire."""
    assert _roundtrip(ok_reply(7, {"jobs": []})) == {"id": 7, "ok": True, "result": {"jobs": []}}
    assert _roundtrip(error_reply(None, 1201, "unknown op 'x'")) == {
        "id": None, "ok": False, "error": {"code": 1201, "message": "unknown op 'x'"}}


def test_request_copies_args_and_defaults_to_empty_map() -> None:
    """request() builds a fresh args map and uses {} when none is given."""
    args = {"job": "abc"}
    msg = request("status", args, msg_id=3)
    args["job"] = "changed"
    assert msg == {"op": "status", "args": {"job": "abc"}, "id": 3}
    assert request("hello") == {"op": "hello", "args": {}, "id": 0}


# --- body_length ------------------------------------------------------------------


def test_body_length_at_limit_is_accepted() -> None:
    """A length equal to the limit is allowed."""
    assert body_length(HEADER.pack(1000), limit=1000) == 1000
    assert body_length(HEADER.pack(0), limit=1000) == 0


def test_body_length_over_limit_refused_from_header_alone() -> None:
    """A header announcing more than the limit raises FrameTooLarge without any body present."""
    with pytest.raises(FrameTooLarge) as info:
        body_length(HEADER.pack(1001), limit=1000)
    assert "1001" in str(info.value) and "1000" in str(info.value)


def test_body_length_default_limit() -> None:
    """The default limit is DEFAULT_MAX_FRAME: one byte more is refused."""
    assert body_length(HEADER.pack(DEFAULT_MAX_FRAME)) == DEFAULT_MAX_FRAME
    with pytest.raises(FrameTooLarge):
        body_length(HEADER.pack(DEFAULT_MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        body_length(b"\xff\xff\xff\xff")


def test_frame_too_large_is_a_protocol_error() -> None:
    """FrameTooLarge is caught by handlers that catch ProtocolError."""
    with pytest.raises(ProtocolError):
        body_length(HEADER.pack(10), limit=5)


@pytest.mark.parametrize("header", [b"", b"\x00", b"\x00\x00\x01", b"\x00\x00\x00\x01\x00"])
def test_body_length_rejects_truncated_or_long_header(header: bytes) -> None:
    """A header that is not exactly four bytes raises ProtocolError naming the byte count."""
    with pytest.raises(ProtocolError) as info:
        body_length(header)
    assert not isinstance(info.value, FrameTooLarge)
    assert f"{len(header)} of 4" in str(info.value)


# --- decode failures --------------------------------------------------------------


@pytest.mark.parametrize("value", [[1, 2, 3], "a string", 17, None, b"raw", True, 1.5])
def test_decode_non_map_raises(value: object) -> None:
    """A well-formed msgpack value that is not a map is refused with its type named."""
    with pytest.raises(ProtocolError) as info:
        decode(msgpack.packb(value, use_bin_type=True))
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\xc1",  # the one byte msgpack never uses
        b"\x82\xa2op",  # a map cut short
        msgpack.packb({"a": 1}) + b"\x01",  # trailing bytes after the map
        msgpack.packb({1: "int key"}),  # non-string map key
        b"\xdf\xff\xff\xff\xff",  # a map claiming 4 billion entries
    ],
)
def test_decode_garbage_raises_protocol_error(body: bytes) -> None:
    """Bytes that do not hold exactly one string-keyed map raise ProtocolError, never something else."""
    with pytest.raises(ProtocolError) as info:
        decode(body)
    assert "frame" in str(info.value)


# --- parse_request ----------------------------------------------------------------


def test_parse_request_ok() -> None:
    """A well-formed request yields its op, args and id."""
    assert parse_request({"op": "status", "args": {"job": "x"}, "id": 5}) == ("status", {"job": "x"}, 5)


def test_parse_request_missing_args_and_id_default() -> None:
    """Absent or nil args become {} and an absent id is None."""
    assert parse_request({"op": "list"}) == ("list", {}, None)
    assert parse_request({"op": "list", "args": None, "id": None}) == ("list", {}, None)


@pytest.mark.parametrize("msg", [{}, {"args": {}, "id": 1}, {"op": "", "id": 1}, {"op": 7, "id": 1}, {"op": None}])
def test_parse_request_needs_op_string(msg: dict) -> None:
    """A missing, empty or non-string op is refused."""
    with pytest.raises(ProtocolError, match="op"):
        parse_request(msg)


@pytest.mark.parametrize("args", [[1, 2], "job=x", 3, b"bytes"])
def test_parse_request_args_must_be_map(args: object) -> None:
    """args that are not a map are refused."""
    with pytest.raises(ProtocolError, match="args"):
        parse_request({"op": "status", "args": args, "id": 1})


@pytest.mark.parametrize("msg_id", ["1", 1.0, [1], b"1"])
def test_parse_request_id_must_be_int(msg_id: object) -> None:
    """A non-integer id is refused."""
    with pytest.raises(ProtocolError, match="id"):
        parse_request({"op": "status", "args": {}, "id": msg_id})


def test_parse_request_after_wire_roundtrip() -> None:
    """A request that went through encode and decode parses to what was sent."""
    msg = _roundtrip(request("submit", {"data": b"\x00\x01"}, msg_id=9))
    assert parse_request(msg) == ("submit", {"data": b"\x00\x01"}, 9)


# --- resolve_socket_path ---------------------------------------------------------

FULL_ENV = {
    "TABFLEET_SOCKET": "/env/sock",
    "RUNTIME_DIRECTORY": "/run/tabfleetd:/run/other",
    "XDG_RUNTIME_DIR": "/run/user/1000",
}


def test_socket_explicit_wins() -> None:
    """An explicit --socket beats every environment variable."""
    assert resolve_socket_path("/explicit.sock", FULL_ENV, 1000) == Path("/explicit.sock")


def test_socket_env_variable_second() -> None:
    """$TABFLEET_SOCKET is used when no explicit path is given."""
    assert resolve_socket_path(None, FULL_ENV, 1000) == Path("/env/sock")
    assert resolve_socket_path("", FULL_ENV, 1000) == Path("/env/sock")


def test_socket_runtime_directory_first_entry() -> None:
    """$RUNTIME_DIRECTORY comes third, and only its first colon-separated entry is used."""
    env = {k: v for k, v in FULL_ENV.items() if k != "TABFLEET_SOCKET"}
    assert resolve_socket_path(None, env, 1000) == Path("/run/tabfleetd") / SOCKET_NAME
    assert resolve_socket_path(None, {"RUNTIME_DIRECTORY": "/run/only"}, 1000) == Path("/run/only/tabfleetd.sock")


def test_socket_xdg_runtime_dir_fourth() -> None:
    """$XDG_RUNTIME_DIR/tabfleet is used when the more specific variables are unset or empty."""
    env = {"TABFLEET_SOCKET": "", "RUNTIME_DIRECTORY": "", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert resolve_socket_path(None, env, 1000) == Path("/run/user/1000/tabfleet/tabfleetd.sock")


def test_socket_tmp_fallback_uses_uid() -> None:
    """With nothing set the socket lives in /tmp/tabfleet-UID."""
    assert resolve_socket_path(None, {}, 1234) == Path("/tmp/tabfleet-1234/tabfleetd.sock")
    assert resolve_socket_path(None, {"XDG_RUNTIME_DIR": ""}, 0) == Path("/tmp/tabfleet-0/tabfleetd.sock")


def test_socket_candidates_end_with_the_service_socket() -> None:
    """A client looks at the user's own places first and the systemd service's /run/tabfleet last."""
    assert socket_candidates(None, {"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000) == [
        Path("/run/user/1000/tabfleet/tabfleetd.sock"), Path("/tmp/tabfleet-1000/tabfleetd.sock"),
        Path("/run/tabfleet/tabfleetd.sock")]
    assert socket_candidates(None, {}, 0)[-1] == protocol.SERVICE_SOCKET


def test_named_socket_is_the_only_candidate() -> None:
    """--socket or $TABFLEET_SOCKET names the one place to look: no fallback to another daemon."""
    assert socket_candidates("/explicit.sock", FULL_ENV, 1000) == [Path("/explicit.sock")]
    assert socket_candidates(None, FULL_ENV, 1000) == [Path("/env/sock")]


def test_socket_name_constant() -> None:
    """The socket file name is tabfleetd.sock, shared by daemon and client."""
    assert protocol.SOCKET_NAME == "tabfleetd.sock"
