"""The store's file on disk: checked before LMDB maps it, marked once created, backed up, and restored.

LMDB trusts its file. A data.mdb cut to 0 bytes opens as a new, empty store
(every job silently gone); one cut short kills the process with SIGBUS on the
first read past its end; garbage in its pages breaks calls deep inside the
daemon. So before LMDB sees the file:

- `initialised`, next to data.mdb, is written once a store has been created:
  a store with that marker and no data.mdb, or an empty one, is damaged, not new;
- both meta pages must be LMDB meta pages, and the file must reach the last page
  that the newer one names (else LMDB would fault reading past the end);
- the whole file is walked by py-lmdb's offline verifier (pure Python: hostile
  bytes cannot crash it), and after opening every job record is decoded once.

A compacted copy, data.mdb.prev, is kept (at each compaction, and whenever the
last one is older than backup_interval_h), and `tabfleetd --restore-store` puts
it back. Any damage stops the daemon with StoreDamaged: one message that says
what is wrong and how to restore, and an exit code the unit does not restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lmdb
from lmdb import verify as lmdb_verify

from ..errors import StoreDamaged
from ..files.outputs import fsync_path

log = logging.getLogger(__name__)

DATA = "data.mdb"
MARKER = "initialised"
BACKUP = "data.mdb.prev"
_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1  # LMDB 0.9's on-disk format, the one py-lmdb bundles
_P_META = 0x08
# A 64-bit LMDB 0.9 meta page: a 16-byte page header (pgno, pad, flags, ...), then MDB_meta: magic, version,
# address, mapsize, two MDB_db records (the free DB's md_pad holds the page size), last page, txn id.
_FLAGS_AT, _MAGIC_AT, _PSIZE_AT, _LAST_PG_AT, _TXNID_AT = 10, 16, 40, 136, 144
_META_BYTES = 152
_FILE_MODE = 0o600


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def damaged(path: Path, reason: str) -> StoreDamaged:
    """The one message for a damaged store: what is wrong and how to get the jobs back."""
    backup = path / BACKUP
    head = (f"the store {path / DATA} is damaged: {reason}. tabfleetd will not start on it, so that no job is "
            "silently lost.")
    if backup.is_file():
        how = (f" A copy from {_stamp(backup.stat().st_mtime)} is {backup}: run `tabfleetd --restore-store` with the "
               f"same --config/--state-dir to put it back (the damaged file is kept beside it); changes since that "
               f"copy are lost. Or move {path} away to start with an empty store.")
    else:
        how = f" There is no earlier copy ({backup}); move {path} away to start with an empty store (its jobs are lost)."
    return StoreDamaged(head + how)


def read_header(data: Path) -> tuple[int, int]:
    """The page size and the bytes the file must hold (up to its last page), from the newer meta page."""
    with open(data, "rb") as f:
        first = f.read(_META_BYTES)
        if len(first) < _META_BYTES:
            raise ValueError(f"it is {len(first)} bytes, too short for an LMDB header")
        psize = struct.unpack_from("<I", first, _PSIZE_AT)[0]
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            raise ValueError("its first page is not an LMDB meta page")
        f.seek(psize)
        second = f.read(_META_BYTES)
    metas = []
    for number, page in enumerate((first, second)):
        if len(page) < _META_BYTES:
            raise ValueError(f"it ends inside its header (meta page {number})")
        flags = struct.unpack_from("<H", page, _FLAGS_AT)[0]
        magic, version = struct.unpack_from("<II", page, _MAGIC_AT)
        if not flags & _P_META or magic != _MAGIC or version != _DATA_VERSION:
            raise ValueError(f"meta page {number} is not an LMDB 0.9 meta page")
        last_pg, txnid = struct.unpack_from("<QQ", page, _LAST_PG_AT)
        metas.append((txnid, last_pg))
    _, last_pg = max(metas)
    return psize, (last_pg + 1) * psize


def check_before_open(path: Path) -> bool:
    """Refuse a damaged store before LMDB maps it; returns True when there is no store yet (a new one)."""
    data = path / DATA
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        size = None
    if not size:
        if (path / MARKER).exists():
            raise damaged(path, "data.mdb is missing" if size is None else "data.mdb is empty (0 bytes)")
        return True
    try:
        _, needed = read_header(data)
    except (ValueError, OSError) as exc:
        raise damaged(path, str(exc)) from None
    if size < needed:
        raise damaged(path, f"it is {size} bytes but its header says it holds {needed} (it was cut short)")
    try:
        problems = lmdb_verify.verify(str(data), subdir=False)
    except (lmdb_verify.VerifyError, OSError) as exc:
        raise damaged(path, f"it cannot be read as LMDB ({exc})") from None
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise damaged(path, f"its pages are corrupt: {problems[0]}{more}")
    return False


def check_readable(path: Path, read_all: Callable[[], object]) -> None:
    """Run the first read (which decodes every job record); any failure means the store is damaged."""
    try:
        read_all()
    except (lmdb.Error, ValueError, TypeError, KeyError) as exc:  # msgpack's errors are ValueErrors
        raise damaged(path, f"its records cannot be read ({type(exc).__name__}: {exc})") from None


def mark_initialised(path: Path) -> None:
    """Write the marker that tells a new store from an emptied one, once."""
    marker = path / MARKER
    if marker.exists():
        return
    _write_file(marker, f"created {time.time():.0f}\n".encode())


def backup(env: lmdb.Environment, path: Path) -> int:
    """Write a compacted copy of the store to data.mdb.prev, atomically; returns its size in bytes."""
    tmp = path / (BACKUP + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
    try:
        env.copyfd(fd, compact=True)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    os.replace(tmp, path / BACKUP)
    fsync_path(path)
    return size


def usage(env: lmdb.Environment, path: Path, dbs: Iterable[Any]) -> dict[str, int]:
    """Bytes in the data file and bytes its live pages use (the rest is LMDB's free list); `dbs` are the named databases."""
    info = env.info()
    stat = env.stat()
    page = stat["psize"]
    used_pages = 2 + stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]  # 2 meta pages
    with env.begin() as txn:
        for db in dbs:
            s = txn.stat(db)
            used_pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
    file_bytes = (path / "data.mdb").stat().st_size
    return {"file_bytes": file_bytes, "used_bytes": min(file_bytes, used_pages * page),
            "last_page_bytes": (info["last_pgno"] + 1) * page}


def compact(env: lmdb.Environment, path: Path) -> dict[str, int]:
    """Rewrite the data file without free pages, closing `env` (the caller reopens); returns sizes before and after."""
    data = path / "data.mdb"
    scratch = path.with_name(path.name + ".compact")
    before = data.stat().st_size
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env.copy(str(scratch), compact=True)
    os.chmod(scratch / "data.mdb", 0o600)  # LMDB's copy follows the umask; the store holds every prompt
    fsync_path(scratch / "data.mdb")
    env.close()
    # One rename swaps the file: a crash at any point leaves either the old or the new file whole.
    os.replace(scratch / "data.mdb", data)
    fsync_path(path)
    shutil.rmtree(scratch, ignore_errors=True)
    after = data.stat().st_size
    log.info("store compacted from %.1f MiB to %.1f MiB", before / 2**20, after / 2**20)
    return {"before_bytes": before, "after_bytes": after}


def backup_age_s(path: Path, now: float) -> float | None:
    """Seconds since data.mdb.prev was written, or None when there is none."""
    try:
        return now - (path / BACKUP).stat().st_mtime
    except FileNotFoundError:
        return None


def restore(path: Path) -> str:
    """Put data.mdb.prev back as data.mdb, keeping the damaged file beside it; returns what was done."""
    backup_file = path / BACKUP
    if not backup_file.is_file():
        raise StoreDamaged(f"there is no copy to restore ({backup_file} does not exist)")
    problems = lmdb_verify.verify(str(backup_file), subdir=False)
    if problems:
        raise StoreDamaged(f"the copy {backup_file} is damaged too: {problems[0]}")
    data = path / DATA
    kept = None
    if data.exists():
        kept = path / f"{DATA}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(data, kept)
    tmp = path / (DATA + ".restoring")
    shutil.copyfile(backup_file, tmp)
    os.chmod(tmp, _FILE_MODE)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, data)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / "lock.mdb")  # LMDB rebuilds it; the old one described the damaged file
    fsync_path(path)
    mark_initialised(path)
    note = f"; the damaged file is kept as {kept}" if kept else ""
    return f"restored {data} from the copy of {_stamp(backup_file.stat().st_mtime)}{note}"


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_path(path.parent)
