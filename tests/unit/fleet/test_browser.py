"""Unit tests for tabfleetd.fleet.browser: finding Chromium and building its command line (nothing is started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tabfleetd.fleet import browser
from tabfleetd.fleet.browser import BASE_ARGS, chromium_argv, find_chromium
from tabfleetd.errors import BrowserError, ChromiumNotFound


def _fake_exe(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / name
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(mode)
    return exe


def test_finds_chromium_on_path(tmp_path: Path) -> None:
    """An executable named chromium on the given PATH is found."""
    exe = _fake_exe(tmp_path / "bin", "chromium")
    assert Path(find_chromium(None, str(tmp_path / "bin"))) == exe


def test_finds_other_candidate_names(tmp_path: Path) -> None:
    """google-chrome is found when no chromium is on PATH."""
    exe = _fake_exe(tmp_path / "bin", "google-chrome")
    assert Path(find_chromium(None, str(tmp_path / "bin"))) == exe


def test_prefers_chromium_over_later_candidates(tmp_path: Path) -> None:
    """chromium is preferred to google-chrome even when google-chrome comes first on PATH."""
    chrome = _fake_exe(tmp_path / "a", "google-chrome")
    chromium = _fake_exe(tmp_path / "b", "chromium")
    found = find_chromium(None, os.pathsep.join([str(chrome.parent), str(chromium.parent)]))
    assert Path(found) == chromium


def test_non_executable_file_is_not_chromium(tmp_path: Path) -> None:
    """A file named chromium without execute permission is not taken."""
    _fake_exe(tmp_path / "bin", "chromium", mode=0o644)
    with pytest.raises(ChromiumNotFound):
        find_chromium(None, str(tmp_path / "bin"))


def test_configured_absolute_path_used(tmp_path: Path) -> None:
    """An explicitly configured executable path is used even when it is not on PATH."""
    exe = _fake_exe(tmp_path / "opt", "my-chrome")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Path(find_chromium(str(exe), str(empty))) == exe


def test_configured_name_resolved_on_path(tmp_path: Path) -> None:
    """A configured bare name is looked up on PATH, before any default candidate."""
    _fake_exe(tmp_path / "bin", "chromium")
    custom = _fake_exe(tmp_path / "bin", "chromium-dev")
    assert Path(find_chromium("chromium-dev", str(tmp_path / "bin"))) == custom


def test_configured_missing_path_raises_naming_it(tmp_path: Path) -> None:
    """A configured path that does not exist raises ChromiumNotFound naming it, with no fallback."""
    _fake_exe(tmp_path / "bin", "chromium")  # a fallback that must not be used
    missing = tmp_path / "nowhere" / "chrome"
    with pytest.raises(ChromiumNotFound) as info:
        find_chromium(str(missing), str(tmp_path / "bin"))
    assert str(missing) in str(info.value)


def test_none_found_message_says_how_to_install(tmp_path: Path) -> None:
    """With nothing on PATH the error tells the user to `apt-get install chromium` or pass --chromium."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ChromiumNotFound) as info:
        find_chromium(None, str(empty))
    message = str(info.value)
    assert "apt-get install chromium" in message
    assert "--chromium" in message
    assert isinstance(info.value, BrowserError) and info.value.code == 1701


# --- chromium_argv ----------------------------------------------------------------


def _argv(tmp_path: Path, *, headless: bool, as_root: bool, extra: tuple[str, ...] = ()) -> list[str]:
    return chromium_argv("/usr/bin/chromium", tmp_path / "profile", headless, extra, as_root)


def _chromium_part(argv: list[str]) -> list[str]:
    """The Chromium command itself, without any setpriv wrapper in front."""
    return argv[argv.index("/usr/bin/chromium"):]


def test_argv_no_sandbox_only_as_root(tmp_path: Path) -> None:
    """--no-sandbox is added for root and only for root."""
    assert "--no-sandbox" in _argv(tmp_path, headless=True, as_root=True)
    assert "--no-sandbox" not in _argv(tmp_path, headless=True, as_root=False)


def test_argv_headless_only_when_asked(tmp_path: Path) -> None:
    """--headless=new is added only when headless is set."""
    assert "--headless=new" in _argv(tmp_path, headless=True, as_root=False)
    headed = _argv(tmp_path, headless=False, as_root=False)
    assert not any(a.startswith("--headless") for a in headed)


def test_argv_user_data_dir_and_base_args(tmp_path: Path) -> None:
    """The profile is passed as --user-data-dir and every base argument is present."""
    argv = _argv(tmp_path, headless=True, as_root=False)
    assert f"--user-data-dir={tmp_path / 'profile'}" in argv
    for arg in BASE_ARGS:
        assert arg in argv
    assert "--remote-debugging-pipe" in argv and not any(a.startswith("--remote-debugging-port") for a in argv)


def test_argv_extra_args_kept_in_order_before_url(tmp_path: Path) -> None:
    """Extra arguments appear in order after the built-in ones, and about:blank comes last."""
    extra = ("--lang=de", "--window-size=1024,768")
    argv = _chromium_part(_argv(tmp_path, headless=True, as_root=True, extra=extra))
    assert argv[0] == "/usr/bin/chromium"
    assert argv[-1] == "about:blank"
    assert argv[-3:-1] == list(extra)
    assert argv.index("--lang=de") > argv.index("--no-sandbox")


def test_argv_wrapped_in_setpriv_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With setpriv available Chromium is started through setpriv --pdeathsig KILL --."""
    monkeypatch.setattr(browser.shutil, "which", lambda name, *a, **k: "/usr/bin/setpriv" if name == "setpriv" else None)
    argv = _argv(tmp_path, headless=True, as_root=False)
    assert argv[:5] == ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/usr/bin/chromium"]
    assert argv[-1] == "about:blank"


def test_argv_unwrapped_without_setpriv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without setpriv the command line starts with the Chromium executable itself."""
    monkeypatch.setattr(browser.shutil, "which", lambda name, *a, **k: None)
    argv = _argv(tmp_path, headless=False, as_root=False)
    assert argv[0] == "/usr/bin/chromium"
    assert "setpriv" not in " ".join(argv)


def test_profile_scan_keeps_no_process_cache(tmp_path: Path) -> None:
    """Scanning for a profile's processes leaves psutil's process cache empty: no command lines of others are held."""
    import psutil

    assert browser.kill_profile_processes(tmp_path / "no-such-profile") == 0
    assert psutil._pmap == {}
