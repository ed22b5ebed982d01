"""Where a job's images go: file names, crash-safe writes, the out-dir claim and the manifest.

Everything here is written so that a crash at any moment leaves the output
directory readable: files appear whole or not at all (write_atomic), the
manifest loses at most its unfinished last line, and stray temp files can be
found and deleted on restart. Every file operation goes through an OutDir
(outdir.py), so a symlink a client planted is refused, never followed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

from anyascii import anyascii

from ..errors import ForeignFile, OutDirError
from .outdir import OutDir

log = logging.getLogger(__name__)

MARKER = ".tabfleet-job"
MANIFEST = "manifest.jsonl"
MAX_IMAGE_BYTES = 64 << 20  # far above any generated image; a bigger file at an image's name is not ours
MAX_MARKER_BYTES = 256
MAX_MANIFEST_BYTES = 1 << 30
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Windows refuses these as file names whatever the extension.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Room for the "prompt" fallback and for a reserved name plus its "-".
_MIN_SLUG_LEN = 6


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
    """Replace ``path`` with ``data`` so that readers and crashes see the old or new file, never a mix.

    The directory is reached without following symlinks (OutDir); disk errors propagate as OSError with
    their errno, a symlink on the way as ForeignFile.
    """
    with OutDir(path.parent) as out:
        out.write_atomic(path.name, data)


def read_image(path: Path) -> bytes | None:
    """The finished image at ``path``, or None when there is none (its directory included).

    Anything else at that name (a symlink, a hard link, a directory, a file that is not a PNG, JPEG, GIF or
    WebP image, or one over MAX_IMAGE_BYTES) raises ForeignFile: it is never adopted or served.
    """
    try:
        with OutDir(path.parent) as out:
            return out.read_image(path.name, MAX_IMAGE_BYTES)
    except FileNotFoundError:
        return None


def dir_exists(out: Path) -> bool:
    """True when ``out`` is reachable as a directory without following a symlink."""
    try:
        OutDir(out).close()
    except (OSError, OutDirError):
        return False
    return True


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim_out_dir(out: Path, job_id: str, known: Container[str] = ()) -> bool:
    """Create ``out`` if needed and mark it as job ``job_id``'s, refusing a directory another job owns.

    Returns whether the directory itself was created here, for release_out_dir. The marker is read with a
    size limit, and what it holds appears in a message only when it is one of the ``known`` job ids: a
    client may have put anything there, a link to a secret included.
    """
    try:
        with OutDir(out, create=True) as d:
            other = _marker_job(d)
            # Two jobs writing into one directory would overwrite each other's images.
            if other is not None and other != job_id:
                whose = f"job {other}" if other in known else f"another job (see its {MARKER})"
                raise OutDirError(f"{out} already holds the output of {whose}; choose another --out")
            d.write_atomic(MARKER, f"{job_id}\n".encode())
            return d.created
    except ForeignFile as e:
        raise OutDirError(f"cannot use {out} as the output directory: {e}; choose another --out") from None
    except OSError as e:
        raise OutDirError(f"cannot use {out} as the output directory: {e.strerror or e}") from None


def release_out_dir(out: Path, job_id: str, created: bool) -> None:
    """Undo claim_out_dir after a submit failed: remove the marker if it still names ``job_id``, and the
    directory if the claim made it and it is empty."""
    with contextlib.suppress(OSError, OutDirError):
        with OutDir(out) as d:
            if _marker_job(d) == job_id:
                d.unlink(MARKER)
        if created:
            with OutDir(out.parent) as parent:
                os.rmdir(out.name, dir_fd=parent.fd)


def _marker_job(d: OutDir) -> str | None:
    raw = d.read(MARKER, MAX_MARKER_BYTES)
    if raw is None:
        return None
    text = raw.decode("ascii", "replace").strip()
    if not _JOB_ID.fullmatch(text):
        raise ForeignFile(f"{d.path / MARKER} is not a marker tabfleet wrote")
    return text


def append_manifest(out: Path, record: dict[str, Any]) -> bool:
    """Append ``record`` as one JSON line to the manifest in ``out`` and fsync it.

    Returns False when the manifest's name held something else (a symlink, a hard link): that entry is
    replaced by a new manifest holding only this line, never written through, and the caller rewrites the
    manifest from the store.
    """
    line = _manifest_line(record)
    with OutDir(out) as d:
        try:
            d.append(MANIFEST, line)
            return True
        except ForeignFile as e:
            log.warning("%s; replacing it", e)
            d.write_atomic(MANIFEST, line)
            return False


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """Return the manifest records in ``out`` in order, ignoring an unfinished last line."""
    return list(manifest_records(out))


def manifest_records(out: Path) -> Iterator[dict[str, Any]]:
    """The manifest records in ``out`` one at a time (a million-line manifest is never a million dicts at once)."""
    path = out / MANIFEST
    try:
        with OutDir(out) as d:
            content = d.read(MANIFEST, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return
    if content is None:
        return
    start, number = 0, 0
    # The piece after the last "\n" is empty or a line a crash cut short.
    while (end := content.find(b"\n", start)) >= 0:
        line, start, number = content[start:end], end + 1, number + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise OutDirError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise OutDirError(f"{path} line {number} is not a JSON object")
        yield record


def rewrite_manifest(out: Path, records: list[dict[str, Any]]) -> None:
    """Replace the manifest in ``out`` with ``records``, atomically."""
    write_atomic(out / MANIFEST, b"".join(_manifest_line(record) for record in records))


def _manifest_line(record: dict[str, Any]) -> bytes:
    # Compact and key-sorted so equal records give equal lines.
    text = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def find_leftover_temps(out: Path) -> list[Path]:
    """Return the ".*.tmp" files a crash left in ``out`` (none when it is not a reachable directory)."""
    try:
        with OutDir(out) as d:
            return [out / name for name in d.leftover_temps()]
    except (OSError, OutDirError):
        return []


def remove_leftover_temps(out: Path) -> int:
    """Delete the ".*.tmp" files a crash left in ``out``, through its dir fd; returns how many."""
    try:
        with OutDir(out) as d:
            return sum(d.unlink(name) for name in d.leftover_temps())
    except (FileNotFoundError, OutDirError):
        return 0


def space_problem(out: Path, min_free_mb: float) -> str | None:
    """Why the output directory cannot take images now, or None when it can."""
    try:
        st = os.statvfs(out)
    except FileNotFoundError:
        return None  # not made yet: the worker's write makes it, or says why it cannot
    except OSError as exc:
        return f"cannot read {out}: {exc.strerror}"
    free_mb = st.f_bavail * st.f_frsize / 2**20
    if free_mb < min_free_mb:
        return f"only {free_mb:.1f} MB free on {out} (min_free_mb = {min_free_mb:g})"
    if st.f_flag & os.ST_RDONLY:
        return f"{out} is on a read-only filesystem"
    return None
