"""The profile trim lists: caches, crash dumps and history go; what holds the session stays; the cap sheds the rest."""

from __future__ import annotations

from pathlib import Path

from tabfleetd.fleet.profiletrim import KEEP, TRIM, shed, tree_bytes, trim

KB = 1024


def write(root: Path, rel: str, size: int = KB) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def profile(root: Path) -> Path:
    """A profile as Chromium leaves one: session files, caches and history, and something no list names."""
    for rel in ("Default/Cookies", "Default/Cookies-journal", "Default/Network/Cookies", "Default/Local Storage/leveldb/000003.log",
                "Default/Session Storage/MANIFEST-000001", "Default/IndexedDB/http_x_0.indexeddb.leveldb/CURRENT",
                "Default/Preferences", "Default/Login Data", "Local State", "tabfleet-account", "tabfleet-profile"):
        write(root, rel)
    for rel in ("Default/Cache/Cache_Data/data_0", "Default/Code Cache/js/index", "Default/GPUCache/data_1",
                "Crashpad/completed/dump.dmp", "Default/History", "Default/History-journal", "Default/Favicons",
                "Default/Top Sites", "Default/Visited Links", "GrShaderCache/data_0",
                "Default/Service Worker/CacheStorage/abc/index", "BrowserMetrics/BrowserMetrics-1.pma"):
        write(root, rel, 64 * KB)
    write(root, "Default/Something New/blob", 256 * KB)
    return root


def session_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and
            any(p.relative_to(root).as_posix() == k or p.relative_to(root).as_posix().startswith(k + "/") for k in KEEP)}


def test_trim_and_keep_never_overlap() -> None:
    """Nothing is both kept and trimmed, nor trimmed inside something kept or kept inside something trimmed."""
    for rel in TRIM:
        assert not any(rel == k or rel.startswith(k + "/") or k.startswith(rel + "/") for k in KEEP), rel


def test_trim_sheds_caches_dumps_and_history_and_keeps_the_session(tmp_path: Path) -> None:
    """Under the cap only TRIM goes: the session's files, and anything unlisted, stay byte for byte."""
    root = profile(tmp_path / "p")
    kept = session_files(root)
    result = trim(root, cap_bytes=10 * 1024 * KB)
    assert not result.deep and not result.over_cap
    assert set(result.removed) >= {"Default/Cache", "Default/Code Cache", "Default/GPUCache", "Crashpad", "Default/History",
                                   "Default/History-journal", "Default/Favicons", "Default/Top Sites",
                                   "Default/Visited Links", "GrShaderCache", "Default/Service Worker/CacheStorage",
                                   "BrowserMetrics"}
    assert session_files(root) == kept and all((root / rel).read_bytes() == b"x" * KB for rel in kept)
    assert (root / "Default/Something New/blob").exists()
    assert (root / "Default/Service Worker").is_dir()  # only its caches went
    assert result.after == tree_bytes(root) < result.before


def test_a_profile_over_its_cap_sheds_all_but_the_session(tmp_path: Path) -> None:
    """Still over the cap after TRIM: everything but KEEP goes, the session stays."""
    root = profile(tmp_path / "p")
    kept = session_files(root)
    result = trim(root, cap_bytes=100 * KB)
    assert result.deep and not result.over_cap
    assert "Default/Something New" in result.removed
    assert session_files(root) == kept
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == kept


def test_a_cap_the_session_alone_outgrows_is_reported(tmp_path: Path) -> None:
    """A cap smaller than what is kept: the session stays all the same, and the result says it is still over."""
    root = profile(tmp_path / "p")
    write(root, "Default/IndexedDB/big.ldb", 512 * KB)
    result = trim(root, cap_bytes=100 * KB)
    assert result.over_cap and (root / "Default/IndexedDB/big.ldb").exists()


def test_no_cap_and_symlinks(tmp_path: Path) -> None:
    """A cap of 0 never sheds more than TRIM; a symlink in the trim list is removed, never followed."""
    root = profile(tmp_path / "p")
    outside = write(tmp_path, "outside/precious")
    (root / "Default/Cache").rename(root / "old-cache")
    (root / "Default/Cache").symlink_to(outside.parent)
    result = trim(root, cap_bytes=0)
    assert not result.deep and "Default/Cache" in result.removed
    assert outside.exists() and (root / "Default/Something New/blob").exists()
    assert shed(tmp_path / "missing", deep=True) == [] and shed(tmp_path / "missing", deep=False) == []
