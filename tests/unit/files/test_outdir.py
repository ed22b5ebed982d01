"""Unit tests for tabfleetd.files.outdir and the output functions built on it: nothing a client plants is followed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tabfleetd.files import outputs
from tabfleetd.errors import ForeignFile, OutDirError
from tabfleetd.files.outdir import OutDir, image_type, is_image, resolve_out
from tabfleetd.files.outputs import MANIFEST, MARKER

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SECRET = "session=very-secret-cookie-value"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file standing for one the daemon owns (a cookie database, a profile file)."""
    path = tmp_path / "daemon-owned" / "Cookies"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "client-out"
    path.mkdir()
    return path


def test_image_signatures() -> None:
    """PNG, JPEG, GIF and WebP signatures count as images; text, empty data and bare RIFF do not."""
    for head, mime in [(PNG, "image/png"), (b"\xff\xd8\xff\xe0", "image/jpeg"), (b"GIF89a..", "image/gif"),
                       (b"GIF87a..", "image/gif"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp")]:
        assert is_image(head) and image_type(head) == mime
    for head in [b"", b"SQLite format 3\x00", b"RIFF\x00\x00\x00\x00WAVEfmt ", SECRET.encode()]:
        assert not is_image(head)


def test_write_replaces_a_symlinked_name_without_touching_its_target(out: Path, secret: Path) -> None:
    """An image name symlinked to a daemon file is replaced by the image; the file it pointed to is unchanged."""
    (out / "00001-a.png").symlink_to(secret)
    outputs.write_atomic(out / "00001-a.png", PNG)
    assert secret.read_text() == SECRET
    assert not (out / "00001-a.png").is_symlink() and (out / "00001-a.png").read_bytes() == PNG


def test_a_symlinked_directory_on_the_way_is_refused(tmp_path: Path, secret: Path) -> None:
    """A directory component that is a symlink is refused for writes and reads; nothing lands where it points."""
    (tmp_path / "jobs").symlink_to(secret.parent)
    with pytest.raises(ForeignFile, match="jobs is a symlink"):
        outputs.write_atomic(tmp_path / "jobs" / "00001-a.png", PNG)
    with pytest.raises(ForeignFile):
        outputs.read_image(tmp_path / "jobs" / "Cookies")
    assert os.listdir(secret.parent) == ["Cookies"]
    assert not outputs.dir_exists(tmp_path / "jobs")
    assert outputs.find_leftover_temps(tmp_path / "jobs") == []


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "directory", "text", "fifo"])
def test_read_image_adopts_nothing_but_an_image_file(out: Path, secret: Path, plant: str) -> None:
    """A symlink, a hard link, a directory, a FIFO (without hanging) or a non-image at an image's name is refused."""
    name = out / "00001-a.png"
    if plant == "symlink":
        name.symlink_to(secret)
    elif plant == "hardlink":
        os.link(secret, name)
    elif plant == "directory":
        name.mkdir()
    elif plant == "text":
        name.write_text(SECRET)
    else:
        os.mkfifo(name)
    with pytest.raises(ForeignFile) as info:
        outputs.read_image(name)
    assert SECRET not in str(info.value)


def test_read_image_returns_images_and_none_for_nothing(out: Path) -> None:
    """A real image comes back whole; a missing file or a missing directory is None."""
    (out / "00001-a.png").write_bytes(PNG)
    assert outputs.read_image(out / "00001-a.png") == PNG
    assert outputs.read_image(out / "00002-b.png") is None
    assert outputs.read_image(out / "gone" / "00001-a.png") is None


def test_read_refuses_a_file_over_its_limit(out: Path) -> None:
    """A file bigger than the limit is refused without being read into memory."""
    (out / "big.png").write_bytes(PNG + b"\x00" * 100)
    with OutDir(out) as d, pytest.raises(ForeignFile, match="more than tabfleet ever writes"):
        d.read_image("big.png", 64)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_manifest_linked_to_a_daemon_file_is_replaced_not_written_through(out: Path, secret: Path, link: str) -> None:
    """Appending to a manifest that is a link leaves the linked file alone and makes a real manifest instead."""
    if link == "symlink":
        (out / MANIFEST).symlink_to(secret)
    else:
        os.link(secret, out / MANIFEST)
    assert outputs.append_manifest(out, {"index": 1}) is False
    assert secret.read_text() == SECRET
    assert outputs.read_manifest(out) == [{"index": 1}]
    assert outputs.append_manifest(out, {"index": 2}) is True
    assert outputs.read_manifest(out) == [{"index": 1}, {"index": 2}]


def test_reading_a_symlinked_manifest_is_refused(out: Path, secret: Path) -> None:
    """read_manifest never reads through a symlink; rewrite_manifest replaces the link."""
    (out / MANIFEST).symlink_to(secret)
    with pytest.raises(ForeignFile):
        outputs.read_manifest(out)
    outputs.rewrite_manifest(out, [{"index": 3}])
    assert secret.read_text() == SECRET and outputs.read_manifest(out) == [{"index": 3}]


def test_append_cuts_a_long_torn_tail(out: Path) -> None:
    """A torn last line longer than one backwards read is cut whole before the next record."""
    (out / MANIFEST).write_bytes(b'{"index":1}\n' + b"x" * 200_000)
    outputs.append_manifest(out, {"index": 2})
    assert outputs.read_manifest(out) == [{"index": 1}, {"index": 2}]


@pytest.mark.parametrize("plant", ["symlink", "garbage", "huge"])
def test_claim_never_echoes_a_planted_marker(out: Path, secret: Path, plant: str) -> None:
    """A marker that is a symlink, holds something other than a job id, or is huge is refused without its contents."""
    marker = out / MARKER
    if plant == "symlink":
        marker.symlink_to(secret)
    elif plant == "garbage":
        marker.write_text(SECRET)
    else:
        marker.write_text("a" * 10_000)
    with pytest.raises(OutDirError) as info:
        outputs.claim_out_dir(out, "job-1", known={"job-1"})
    assert SECRET not in str(info.value) and "aaaa" not in str(info.value)
    assert str(out) in str(info.value)
    assert secret.read_text() == SECRET


def test_claim_creates_each_component_without_following_symlinks(tmp_path: Path, secret: Path) -> None:
    """Creating a new --out under a symlinked component is refused and creates nothing where the link points."""
    (tmp_path / "link").symlink_to(secret.parent)
    with pytest.raises(OutDirError, match="link is a symlink"):
        outputs.claim_out_dir(tmp_path / "link" / "new" / "out", "job-1")
    assert os.listdir(secret.parent) == ["Cookies"]
    assert outputs.claim_out_dir(tmp_path / "a" / "b" / "c", "job-1") is True
    assert (tmp_path / "a" / "b" / "c" / MARKER).read_text() == "job-1\n"
    assert outputs.claim_out_dir(tmp_path / "a" / "b" / "c", "job-1") is False  # there already


def test_release_takes_back_only_its_own_claim(tmp_path: Path) -> None:
    """release_out_dir removes the job's marker and the directory it made; another job's marker stays."""
    made = tmp_path / "made"
    created = outputs.claim_out_dir(made, "job-1")
    outputs.release_out_dir(made, "job-1", created)
    assert not made.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "00001-a.png").write_bytes(PNG)
    outputs.release_out_dir(kept, "job-1", outputs.claim_out_dir(kept, "job-1"))
    assert os.listdir(kept) == ["00001-a.png"]
    outputs.claim_out_dir(kept, "job-2")
    outputs.release_out_dir(kept, "job-1", False)
    assert (kept / MARKER).read_text() == "job-2\n"


def test_leftover_temps_remove_files_not_link_targets(out: Path, secret: Path) -> None:
    """Cleaning temp files deletes regular .*.tmp files only; a symlink so named is left and its target kept."""
    (out / ".00001-a.png.1.ab.tmp").write_bytes(b"half")
    (out / ".x.tmp").symlink_to(secret)
    assert outputs.remove_leftover_temps(out) == 1
    assert sorted(os.listdir(out)) == [".x.tmp"]
    assert secret.read_text() == SECRET
    assert outputs.remove_leftover_temps(out / "gone") == 0


def test_a_fifo_marker_does_not_hang_the_claim(out: Path) -> None:
    """A FIFO at the marker's name is refused at once instead of blocking the open forever."""
    os.mkfifo(out / MARKER)
    failures: list[BaseException] = []

    def claim() -> None:
        try:
            outputs.claim_out_dir(out, "job-1")
        except OutDirError as exc:
            failures.append(exc)

    thread = threading.Thread(target=claim, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and failures and "not a regular file" in str(failures[0])


# --- output roots -------------------------------------------------------------------


def test_resolve_out_keeps_to_the_roots(tmp_path: Path) -> None:
    """--out must lie inside a root, outside the state dir; ".." is resolved lexically and cannot escape."""
    root, state = tmp_path / "srv", tmp_path / "srv" / "state"
    roots, own = (root,), (state,)
    assert resolve_out("out", str(root / "team"), roots, own) == root / "team" / "out"
    assert resolve_out(str(root / "a" / ".." / "b"), "/", roots, own) == root / "b"
    for bad, why in [("../elsewhere", "outside the output roots"), (str(tmp_path), "outside the output roots"),
                     ("/etc", "outside the output roots"), (str(state / "profiles"), "inside the daemon's own"),
                     (str(state), "inside the daemon's own"), ("x/../../../etc", "outside the output roots")]:
        with pytest.raises(OutDirError, match=why):
            resolve_out(bad, str(root), roots, own)


def test_resolve_out_maps_a_root_spelled_through_a_symlink(tmp_path: Path) -> None:
    """A root the operator names through a symlink is matched in either spelling and becomes the physical path."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    roots = (tmp_path / "alias",)
    assert resolve_out(str(tmp_path / "alias" / "x"), "/", roots, ()) == real / "x"
    assert resolve_out(str(real / "x"), "/", roots, ()) == real / "x"
    with pytest.raises(OutDirError, match="inside the daemon's own"):
        resolve_out(str(real / "state" / "x"), "/", roots, (tmp_path / "alias" / "state",))
