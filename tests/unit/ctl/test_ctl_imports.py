"""Import hygiene: tabfleetctl and tabfleetd.protocol load without the daemon's heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# rich is tabfleetctl's own display library, but only `watch` needs it, so it loads there, not with every command.
HEAVY = ("lmdb", "psutil", "pyppeteer", "aiohttp", "prometheus_client", "rich")


def _loaded(*modules: str) -> list[str]:
    """The modules plus every package above them, sorted: what importing exactly these puts in sys.modules."""
    names = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)}
    return sorted(names)


PURE = ("tabfleetd.errors", "tabfleetd.protocol")  # the daemon's modules the client may load


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_ctl_imports_no_heavy_modules(tmp_path: Path) -> None:
    """Importing tabfleetctl.cli pulls in none of lmdb, psutil, pyppeteer, aiohttp, prometheus_client or rich."""
    code = ("import sys, tabfleetctl.cli; "
            f"bad=[m for m in {HEAVY!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


def test_ctl_uses_only_protocol_and_errors_from_daemon(tmp_path: Path) -> None:
    """The only tabfleetd modules tabfleetctl loads are protocol and errors (and the packages holding them)."""
    code = ("import sys, json, tabfleetctl.cli; "
            "print(json.dumps(sorted(m for m in sys.modules if m == 'tabfleetd' or m.startswith('tabfleetd.'))))")
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == _loaded(*PURE)


def test_protocol_imports_only_stdlib_msgpack_and_errors(tmp_path: Path) -> None:
    """tabfleetd.protocol adds only standard-library modules, msgpack and tabfleetd.errors to sys.modules."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import tabfleetd.protocol\n"
        f"allowed = {set(_loaded(*PURE))!r}\n"
        "extra = sorted(m for m in set(sys.modules) - before\n"
        "               if m.split('.')[0] not in sys.stdlib_module_names\n"
        "               and m.split('.')[0] != 'msgpack' and m not in allowed\n"
        "               and not m.startswith(('_cython_', 'cython_runtime')))  # msgpack's compiled parts\n"
        "print(json.dumps(extra))\n"
        "sys.exit(1 if extra else 0)\n"
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []


def test_protocol_check_would_catch_a_heavy_import(tmp_path: Path) -> None:
    """The same check flags a third-party module when one is imported, so the test above can fail."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import tabfleetd.protocol, lmdb\n"
        f"allowed = {set(_loaded(*PURE))!r}\n"
        "extra = sorted(m for m in set(sys.modules) - before\n"
        "               if m.split('.')[0] not in sys.stdlib_module_names\n"
        "               and m.split('.')[0] != 'msgpack' and m not in allowed\n"
        "               and not m.startswith(('_cython_', 'cython_runtime')))  # msgpack's compiled parts\n"
        "print(json.dumps(extra))\n"
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lmdb" in json.loads(proc.stdout)


def test_sites_check_runs_the_pure_checker_and_loads_nothing_heavy(tmp_path: Path) -> None:
    """`sites check` (and submit's own check) loads tabfleetd.sites.profiles, which is standard library only, and nothing heavy."""
    (tmp_path / "mine.toml").write_text(Path(__file__).parents[3].joinpath("daemon/tabfleetd/sites/demo.toml").read_text())
    code = ("import sys, json\n"
            "from tabfleetctl.cli import main\n"
            "try:\n"
            "    main(['--socket', 'none.sock', 'sites', 'check', 'mine.toml'])\n"
            "except SystemExit as stop:\n"
            "    code = stop.code\n"
            f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "ours = sorted(m for m in sys.modules if m == 'tabfleetd' or m.startswith('tabfleetd.'))\n"
            "print(json.dumps({'code': code, 'heavy': bad, 'ours': ours}))\n")
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0, proc.stdout
    assert result["heavy"] == []
    assert result["ours"] == _loaded(*PURE, "tabfleetd.sites.profiles")
