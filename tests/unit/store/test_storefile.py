"""Unit tests for tabfleetd.store.storefile: a damaged store is refused before LMDB maps it, and restored from its copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tabfleetd.store import storefile
from tabfleetd.errors import StoreDamaged
from tabfleetd.store.store import Store


def filled(path: Path, jobs: int = 3, tasks: int = 400) -> list[str]:
    """A store at ``path`` with a few jobs, closed; returns their ids."""
    store = Store(path)
    ids = []
    for _ in range(jobs):
        job = store.create_job(job_id=store.new_job_id(), name="", site="demo", knobs={}, out="/tmp/out",
                               prompts=[f"prompt {i} " + "x" * 100 for i in range(tasks)], max_workers=0,
                               max_attempts=3, source="p.txt")
        ids.append(job["id"])
    store.close()
    return ids


def test_a_new_store_is_marked_and_opens_again(tmp_path: Path) -> None:
    """Creating a store writes the initialised marker; the store then opens again as it was."""
    ids = filled(tmp_path / "store")
    assert (tmp_path / "store" / storefile.MARKER).is_file()
    store = Store(tmp_path / "store")
    assert [j["id"] for j in store.list_jobs()] == ids
    store.close()


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_an_emptied_store_is_damaged_not_new(tmp_path: Path, damage: str) -> None:
    """With the marker, a missing or 0-byte data.mdb is refused instead of opening as an empty store."""
    path = tmp_path / "store"
    filled(path)
    if damage == "missing":
        (path / "data.mdb").unlink()
    else:
        os.truncate(path / "data.mdb", 0)
    with pytest.raises(StoreDamaged, match=f"data.mdb is {damage}"):
        Store(path)
    assert not (path / "data.mdb").exists() or (path / "data.mdb").stat().st_size == 0  # nothing written over it


def test_a_store_cut_short_is_refused_before_it_is_mapped(tmp_path: Path) -> None:
    """A data.mdb cut to half its pages is refused with a message, in a process that LMDB would kill with SIGBUS."""
    path = tmp_path / "store"
    filled(path)
    os.truncate(path / "data.mdb", (path / "data.mdb").stat().st_size // 2)
    # In a child process: if the check let LMDB map the file, the SIGBUS must fail this test, not end pytest.
    code = ("import sys; from pathlib import Path; from tabfleetd.store.store import Store; from tabfleetd.errors import StoreDamaged\n"
            "try:\n    Store(Path(sys.argv[1])).list_jobs()\nexcept StoreDamaged as e:\n    print(e); sys.exit(65)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 65, result
    assert "it was cut short" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["meta", "pages"])
def test_garbage_in_the_file_is_refused(tmp_path: Path, where: str) -> None:
    """Random bytes over the meta pages or over data pages are refused with a message naming the damage."""
    path = tmp_path / "store"
    filled(path)
    store = Store(path)
    store.backup()  # a compacted copy: every page in it is live, so the garbage lands on pages LMDB reads
    store.close()
    data = path / "data.mdb"
    os.replace(path / storefile.BACKUP, data)
    size = data.stat().st_size
    offset = 0 if where == "meta" else size // 3
    with open(data, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(4096 * 3 if where == "pages" else 64))
    with pytest.raises(StoreDamaged) as info:
        Store(path)
    assert "damaged" in str(info.value) and "There is no earlier copy" in str(info.value)


def test_restore_puts_the_copy_back_and_keeps_the_damaged_file(tmp_path: Path) -> None:
    """The message names the copy and --restore-store; restore brings the copied jobs back, the damaged file is kept."""
    path = tmp_path / "store"
    ids = filled(path)
    store = Store(path)
    store.backup()
    store.close()
    os.truncate(path / "data.mdb", 0)
    with pytest.raises(StoreDamaged, match="tabfleetd --restore-store"):
        Store(path)
    message = storefile.restore(path)
    assert "restored" in message and "data.mdb.damaged-" in message
    assert [p.name for p in path.glob("data.mdb.damaged-*")]
    store = Store(path)
    assert [j["id"] for j in store.list_jobs()] == ids
    store.close()


def test_restore_without_a_copy_says_so(tmp_path: Path) -> None:
    """With no data.mdb.prev, restore refuses and the store stays as it was."""
    path = tmp_path / "store"
    filled(path, jobs=1, tasks=3)
    with pytest.raises(StoreDamaged, match="no copy to restore"):
        storefile.restore(path)
    assert Store(path).list_jobs()


def test_a_store_from_before_the_marker_is_checked_and_marked(tmp_path: Path) -> None:
    """A store made before markers existed opens (after its check) and is marked from then on."""
    path = tmp_path / "store"
    ids = filled(path, jobs=1, tasks=3)
    (path / storefile.MARKER).unlink()
    store = Store(path)
    assert [j["id"] for j in store.list_jobs()] == ids
    store.close()
    assert (path / storefile.MARKER).is_file()
