"""Where a job's images go: file names, crash-safe writes, the out-dir claim and the manifest.

Everything here is written so that a crash at any moment leaves the output
directory readable: files appear whole or not at all (write_atomic), the
manifest loses at most its unfinished last line, and stray temp files can be
found and deleted on restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import unicodedata
from pathlib import Path
from typing import Any

from anyascii import anyascii

from .errors import OutDirError

MARKER = ".tabfleet-job"
MANIFEST = "manifest.jsonl"

# Windows refuses these as file names whatever the extension.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Room for the "prompt" fallback and for a reserved name plus its "-".
_MIN_SLUG_LEN = 6
_CHUNK = 1 << 20


def slugify(prompt: str, max_len: int = 48, version: int | None = None) -> str:
    """Return a short, lowercase [a-z0-9-] name for ``prompt`` that is safe on any filesystem.

    ``version`` picks how non-ASCII text becomes ASCII (see NAMES_VERSION); a job keeps the version it was
    queued with, so an upgrade never renames the images of a job already queued.
    """
    if max_len < _MIN_SLUG_LEN:
        raise ValueError(f"max_len must be at least {_MIN_SLUG_LEN}, not {max_len}")
    version = NAMES_VERSION if version is None else version
    if version not in _TO_ASCII:
        raise ValueError(f"unknown output name version {version} (known: {', '.join(map(str, sorted(_TO_ASCII)))})")
    slug = _NOT_SLUG.sub("-", _TO_ASCII[version](prompt).lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    if not slug:
        return "prompt"
    if slug in _RESERVED:
        slug += "-"
    return slug


def _ascii_v1(text: str) -> str:
    # NFKD splits "é" into "e" plus an accent, so dropping non-ASCII keeps the "e"; anything else is lost.
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _ascii_v2(text: str) -> str:
    # anyascii transliterates every script ("Straße" -> "Strasse", "猫" -> "Mao"). A Chinese character is a
    # syllable of its own and Chinese has no spaces, so each one becomes a word: "yi-zhi-mao", not "yizhimao".
    return "".join(f" {anyascii(ch)} " if _is_ideograph(ch) else anyascii(ch) if ord(ch) > 127 else ch for ch in text)


def _is_ideograph(ch: str) -> bool:
    return ord(ch) > 0x2E7F and unicodedata.name(ch, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


# Output name versions: 1 dropped what NFKD could not make ASCII (every Chinese prompt was "prompt"),
# 2 transliterates. Jobs queued before versions existed have none and use 1.
_TO_ASCII = {1: _ascii_v1, 2: _ascii_v2}
NAMES_VERSION = 2


def output_name(index: int, prompt: str, version: int | None = None) -> str:
    """Return the image file name for the ``index``-th (1-based) prompt, made the job's way (``version``)."""
    if index < 1:
        raise ValueError(f"index is 1-based, got {index}")
    return f"{index:05d}-{slugify(prompt, version=version)}.png"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see the old or new file, never a mix."""
    # Same directory so os.replace is a rename, not a copy; the leading "." and
    # ".tmp" let find_leftover_temps spot it after a crash. The name is cut so a
    # long target name cannot push the temp name past the filesystem limit.
    tmp = path.with_name(f".{path.name[:100]}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # The rename itself lives in the directory; without this a power cut
        # can bring back the old file.
        fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def claim_out_dir(out: Path, job_id: str) -> None:
    """Create ``out`` if needed and mark it as job ``job_id``'s, refusing a directory another job owns."""
    marker = out / MARKER
    try:
        if out.exists() and not out.is_dir():
            raise OutDirError(f"{out} exists and is not a directory; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        try:
            other = marker.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            other = ""
        # Two jobs writing into one directory would overwrite each other's images.
        if other and other != job_id:
            raise OutDirError(f"{out} already holds the output of job {other}; choose another --out")
        write_atomic(marker, f"{job_id}\n".encode())
    except OSError as e:
        raise OutDirError(f"cannot use {out} as the output directory: {e.strerror or e}") from e


def append_manifest(out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to the manifest in ``out`` and fsync it."""
    fd = os.open(out / MANIFEST, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _cut_torn_tail(fd)
        view = memoryview(_manifest_line(record))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int) -> None:
    # A crash or a full disk can leave a last line without "\n"; appending to
    # it would glue the next record onto garbage, so drop it first. Only this
    # rare case reads the whole file.
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    content = os.pread(fd, size, 0)
    os.ftruncate(fd, content.rfind(b"\n") + 1)


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """Return the manifest records in ``out`` in order, ignoring an unfinished last line."""
    path = out / MANIFEST
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    # The piece after the last "\n" is empty or a line a crash cut short.
    for number, line in enumerate(content.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise OutDirError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise OutDirError(f"{path} line {number} is not a JSON object")
        records.append(record)
    return records


def rewrite_manifest(out: Path, records: list[dict[str, Any]]) -> None:
    """Replace the manifest in ``out`` with ``records``, atomically."""
    write_atomic(out / MANIFEST, b"".join(_manifest_line(record) for record in records))


def _manifest_line(record: dict[str, Any]) -> bytes:
    # Compact and key-sorted so equal records give equal lines.
    text = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def find_leftover_temps(out: Path) -> list[Path]:
    """Return the ".*.tmp" files a crash left in ``out``, so a restart can delete them."""
    return sorted(p for p in out.glob(".*.tmp") if p.is_file())
