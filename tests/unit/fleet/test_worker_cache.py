"""Unit tests for the worker's HTTP cache measure: the cache is cleared only once it has grown past its limit."""

from __future__ import annotations

from pathlib import Path

from tabfleetd.fleet.profiletrim import tree_bytes as dir_bytes


def test_dir_bytes_sums_files_under_a_tree_and_is_zero_when_missing(tmp_path: Path) -> None:
    """Files in nested directories all count; a cache directory Chromium has not made yet is empty."""
    cache = tmp_path / "Default" / "Cache" / "Cache_Data"
    assert dir_bytes(tmp_path / "Default" / "Cache") == 0
    cache.mkdir(parents=True)
    (cache / "data_0").write_bytes(b"x" * 1000)
    (cache / "index-dir").mkdir()
    (cache / "index-dir" / "the-real-index").write_bytes(b"y" * 24)
    (cache / "link").symlink_to(tmp_path / "elsewhere-not-counted")
    assert dir_bytes(tmp_path / "Default" / "Cache") == 1024 + len(str(tmp_path / "elsewhere-not-counted"))
