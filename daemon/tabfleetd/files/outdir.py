"""An output directory held open by a file descriptor, so a client cannot redirect the daemon's file operations.

Clients choose where their images go and own those directories, so anything in
them may be a trap: a symlink or a hard link to one of the daemon's own files,
a FIFO, a directory, a huge file. Every operation here is therefore relative to
a directory fd and never follows a symlink:

- the directory is reached from "/" one component at a time with
  O_DIRECTORY|O_NOFOLLOW (job paths are physical: `resolve_out` made them so
  at submit), creating missing components the same way;
- a file is opened with O_NOFOLLOW|O_NONBLOCK and used only when it is a
  regular file with one link; anything else raises ForeignFile, whose message
  describes the entry and never its contents;
- files are replaced by rename, which replaces a symlink rather than writing
  through it.

`resolve_out` decides which directories a client may name at all: inside one of
the operator's output roots, never inside the daemon's own directories.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from ..errors import ForeignFile, OutDirError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a planted FIFO must not hang the open
_REFUSED = {errno.ELOOP: "is a symlink, which tabfleet never follows", errno.ENOTDIR: "is not a directory",
            errno.ENXIO: "is a socket or a device", errno.EISDIR: "is a directory"}
_TORN_SCAN = 1 << 16
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


def is_image(head: bytes) -> bool:
    """True when ``head`` starts with a PNG, JPEG, GIF or WebP signature."""
    return head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def image_type(head: bytes) -> str:
    """The MIME type of an image that passed is_image."""
    return next(mime for sig, mime in IMAGE_TYPES.items() if head.startswith(sig))


class OutDir:
    """One output directory, opened without following any symlink; use it as a context manager."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self.created = False  # whether the last component was made here (a failed submit removes it again)
        self.fd = self._walk(create)

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _walk(self, create: bool) -> int:
        if not self.path.is_absolute() or ".." in self.path.parts:
            raise OutDirError(f"{self.path} is not an absolute, normalised path")
        fd = os.open("/", _DIR)
        try:
            for depth, part in enumerate(self.path.parts[1:], start=2):
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                        self.created = depth == len(self.path.parts)
                    nxt = self._open_dir(part, fd, depth)
                except OSError as exc:
                    self._refuse(exc, Path(*self.path.parts[:depth]), part, fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_dir(self, part: str, fd: int, depth: int) -> int:
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            self._refuse(exc, Path(*self.path.parts[:depth]), part, fd)
            raise  # not reached: _refuse always raises

    @staticmethod
    def _refuse(exc: OSError, where: Path, name: str, dir_fd: int) -> None:
        """Raise ForeignFile for an entry that is not what it should be (naming what it is), else the OSError."""
        if exc.errno not in _REFUSED:
            raise exc
        problem = _REFUSED[exc.errno]
        with contextlib.suppress(OSError):  # O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a symlink: say which it is
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                problem = _REFUSED[errno.ELOOP]
        raise ForeignFile(f"{where} {problem}") from None

    # -- files -------------------------------------------------------------------

    def _open(self, name: str, flags: int, mode: int = 0o666) -> int:
        """An fd for ``name`` if it is a regular file with one link; FileNotFoundError when absent."""
        where = self.path / name
        try:
            fd = os.open(name, flags | _FILE, mode, dir_fd=self.fd)
        except OSError as exc:
            self._refuse(exc, where, name, self.fd)
            raise  # not reached
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links"  # a link to a file elsewhere, maybe the daemon's own
        if problem:
            os.close(fd)
            raise ForeignFile(f"{where} {problem}; tabfleet does not use it")
        return fd

    def read(self, name: str, limit: int) -> bytes | None:
        """The file's bytes, or None when there is none; ForeignFile when it is not a plain file under ``limit`` bytes."""
        try:
            fd = self._open(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise ForeignFile(f"{self.path / name} is {size} bytes, more than tabfleet ever writes there ({limit})")
            chunks = []
            while chunk := os.read(fd, min(limit + 1, 1 << 20)):
                chunks.append(chunk)
                limit -= len(chunk)
                if limit < 0:
                    raise ForeignFile(f"{self.path / name} grew while it was read; tabfleet does not use it")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_image(self, name: str, limit: int) -> bytes | None:
        """A finished image's bytes, or None; ForeignFile for anything at that name that is not an image file."""
        data = self.read(name, limit)
        if data is not None and not is_image(data[:16]):
            raise ForeignFile(f"{self.path / name} is not a PNG, JPEG, GIF or WebP image; remove it and resume the job")
        return data

    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data``: readers and crashes see the old or the new file, never a mix.

        Disk errors propagate as OSError with their errno.
        """
        # The leading "." and ".tmp" let remove_leftover_temps find it after a crash; the name is cut so a
        # long target name cannot push the temp name past the filesystem limit.
        tmp = f".{name[:100]}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE, 0o666, dir_fd=self.fd)
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            # A rename replaces whatever is at the name (a symlink included) without touching what it points to.
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            os.fsync(self.fd)  # the rename lives in the directory; without this a power cut can bring the old file back
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise

    def append(self, name: str, data: bytes) -> None:
        """Append ``data`` to ``name`` (created if missing) after cutting a torn last line, and fsync."""
        fd = self._open(name, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            _cut_torn_tail(fd)
            _write_all(fd, data)
        finally:
            os.close(fd)

    def unlink(self, name: str) -> bool:
        """Remove ``name`` (a symlink itself, never its target); False when it was not there."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def leftover_temps(self) -> list[str]:
        """The names of regular ".*.tmp" files a crash left here."""
        found = []
        for name in os.listdir(self.fd):
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISREG(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                        found.append(name)
        return sorted(found)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _cut_torn_tail(fd: int) -> None:
    # A crash or a full disk can leave a last line without "\n"; appending to it would glue the next record
    # onto garbage, so drop it first, reading backwards a chunk at a time.
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - _TORN_SCAN)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def resolve_out(out: str, cwd: str, roots: Iterable[Path], forbidden: Iterable[Path]) -> Path:
    """The physical directory a client's --out names, if it lies inside an output root and outside ``forbidden``.

    The client's path is normalised lexically ("a/../b" is "b" whatever "a" is), so ".." never passes through a
    symlink; a root the operator spelled through a symlink is mapped to its real path. Symlinks below a root are
    refused later, when the directory is opened.
    """
    if not os.path.isabs(cwd) and not os.path.isabs(out):
        raise OutDirError(f"--out {out} is relative, and the client sent no absolute working directory")
    path = Path(os.path.normpath(os.path.join(cwd, out)))
    for root in roots:
        real = Path(os.path.realpath(root))
        if within(path, root):
            path = real / path.relative_to(root)
            break
        if within(path, real):
            break
    else:
        shown = ", ".join(str(r) for r in roots)
        raise OutDirError(f"--out {path} is outside the output roots ({shown}); choose a directory under one of "
                          "them, or ask the operator to add one to output_roots")
    for place in forbidden:
        if within(path, Path(os.path.realpath(place))):
            raise OutDirError(f"--out {path} is inside the daemon's own directory {place}; choose another --out")
    return path
