"""What a worker's Chromium profile keeps and what it sheds, so that a profile stays bounded over weeks.

A profile grows for as long as it is used: the HTTP and code caches, the GPU and shader caches, crash dumps,
history, favicons and the like.  None of it is needed to run a prompt: a fresh browser builds its caches again
in a page load or two.  What must stay is what holds the account's session and the site's state for it:
cookies, local and session storage, IndexedDB, and the preferences and saved logins beside them.

So every local browser start (the worker's first, each rotation, each restart after a crash) first sheds TRIM.
A profile still over its cap (`profile_max_mb`) then sheds everything but KEEP.  Both run only while no Chromium
has the profile open (a running browser holds its caches open and would go on writing to unlinked files), and
in a thread, never on an event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .browser import PROFILE_MARK
from .sessions import PROFILE_ACCOUNT

log = logging.getLogger(__name__)

# Paths relative to the profile (the user-data-dir); "Default" is the one browser profile inside it.
KEEP = frozenset({
    # The session: cookies (Default/Network/Cookies in newer Chromium), web storage, IndexedDB and the like.
    "Default/Cookies", "Default/Cookies-journal", "Default/Network",
    "Default/Local Storage", "Default/Session Storage", "Default/IndexedDB", "Default/WebStorage",
    "Default/databases", "Default/File System",
    # Settings and saved logins a site may rely on; the key store that decrypts them.
    "Default/Preferences", "Default/Secure Preferences", "Default/Login Data", "Default/Login Data-journal",
    "Default/Login Data For Account", "Default/Login Data For Account-journal", "Default/Web Data",
    "Default/Web Data-journal", "Local State",
    # tabfleet's own marks, and the config home the crash handler is given (browser.py).
    PROFILE_MARK, PROFILE_ACCOUNT, "xdg",
})

# Shed at every browser start: caches, crash dumps, history and the browser's own bookkeeping, all of which grow.
TRIM = frozenset({
    "Crashpad", "Crash Reports", "BrowserMetrics", "GrShaderCache", "ShaderCache", "GraphiteDawnCache",
    "GPUPersistentCache", "component_crx_cache", "extensions_crx_cache", "segmentation_platform",
    "Default/Cache", "Default/Code Cache", "Default/GPUCache", "Default/DawnCache", "Default/DawnGraphiteCache",
    "Default/DawnWebGPUCache", "Default/Service Worker/CacheStorage", "Default/Service Worker/ScriptCache",
    "Default/History", "Default/History-journal", "Default/Favicons", "Default/Favicons-journal",
    "Default/Top Sites", "Default/Top Sites-journal", "Default/Visited Links", "Default/Shortcuts",
    "Default/Shortcuts-journal", "Default/Network Action Predictor", "Default/Network Action Predictor-journal",
    "Default/Sessions", "Default/Current Session", "Default/Current Tabs", "Default/Last Session", "Default/Last Tabs",
    "Default/blob_storage", "Default/Segmentation Platform", "Default/Shared Dictionary", "Default/DIPS",
    "Default/DIPS-wal", "Default/optimization_guide_hint_cache_store", "Default/shared_proto_db",
    "Default/Site Characteristics Database", "Default/BudgetDatabase",
})


@dataclass(frozen=True)
class Trimmed:
    before: int  # bytes in the profile before
    after: int
    removed: tuple[str, ...]  # relative paths
    deep: bool  # over the cap after TRIM: everything but KEEP went
    cap: int  # bytes; 0: no cap

    @property
    def over_cap(self) -> bool:
        """Still over the cap: what is kept alone outgrew it."""
        return bool(self.cap) and self.after > self.cap


def tree_bytes(path: Path) -> int:
    """Bytes in the files under `path` (0 when it does not exist); symlinks are not followed."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot trim %s: %s", path, exc)
        return False


def _kept_within(rel: str) -> bool:
    """Whether something kept lies under `rel` (then it is entered, not removed)."""
    return any(keep.startswith(rel + "/") for keep in KEEP)


def shed(profile: Path, deep: bool) -> list[str]:
    """Remove TRIM from `profile`, or (deep) everything but KEEP; return what went."""
    if not deep:
        return sorted(rel for rel in TRIM if _remove(profile / rel))
    removed: list[str] = []

    def prune(directory: Path, prefix: str) -> None:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return
        for name in names:
            rel = f"{prefix}{name}"
            path = directory / name
            if rel in KEEP:
                continue
            if _kept_within(rel):
                if path.is_dir() and not path.is_symlink():
                    prune(path, rel + "/")
                continue
            if _remove(path):
                removed.append(rel)

    prune(profile, "")
    return removed


def trim(profile: Path, cap_bytes: int) -> Trimmed:
    """Shed TRIM, then everything but KEEP if the profile is still over `cap_bytes` (0: no cap).

    Call only while no browser has the profile open.
    """
    before = tree_bytes(profile)
    removed = shed(profile, deep=False)
    after = tree_bytes(profile) if removed else before
    deep = bool(cap_bytes) and after > cap_bytes
    if deep:
        removed += shed(profile, deep=True)
        after = tree_bytes(profile)
    return Trimmed(before, after, tuple(removed), deep, cap_bytes)
