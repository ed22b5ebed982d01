"""How the store writes its records and keys: msgpack values, task keys, and the queues' index keys."""

from __future__ import annotations

import struct
from typing import Any

import msgpack

SEQ_IDX = struct.Struct(">QI")  # fresh: job seq + task index
READY_SEQ_IDX = struct.Struct(">QQI")  # retry: ready time in ms + job seq + task index


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def task_key(job_id: str, index: int) -> bytes:
    return f"{job_id}/{index:06d}".encode()
