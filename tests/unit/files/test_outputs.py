"""Unit tests for tabfleetd.files.outputs: names, atomic writes, the out-dir claim and the manifest."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tabfleetd.files import outdir
from tabfleetd.errors import OutDirError
from tabfleetd.files.outputs import (
    MANIFEST,
    MARKER,
    append_manifest,
    claim_out_dir,
    find_leftover_temps,
    output_name,
    read_manifest,
    rewrite_manifest,
    slugify,
    write_atomic,
)

SAFE_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*-?")
RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)} | {f"lpt{i}" for i in range(1, 10)}


# --- slugify and output_name --------------------------------------------------


@pytest.mark.parametrize(
    "prompt, slug",
    [
        ("A Cat, on the Moon!", "a-cat-on-the-moon"),
        ("  --leading and trailing--  ", "leading-and-trailing"),
        ("Café crème brûlée", "cafe-creme-brulee"),
        ("ﬁne ① ｆｕｌｌｗｉｄｔｈ", "fine-1-fullwidth"),
        ("tabs\tand\nnewlines", "tabs-and-newlines"),
        ("snake_case and dots.png", "snake-case-and-dots-png"),
    ],
)
def test_slugify_examples(prompt: str, slug: str) -> None:
    """Ordinary prompts become lowercase ASCII words joined by single dashes."""
    assert slugify(prompt) == slug


@pytest.mark.parametrize("prompt", ["", "   ", "!!!---???", ".", "..", "\u200b\u200d"])
def test_slugify_empty_result_falls_back(prompt: str) -> None:
    """Prompts with nothing to spell in them become "prompt"."""
    assert slugify(prompt) == "prompt"


@pytest.mark.parametrize(
    "prompt, slug",
    [
        ("一只猫在月光下", "yi-zhi-mao-zai-yue-guang-xia"),
        ("Straße", "strasse"),
        ("Кот в сапогах", "kot-v-sapogakh"),
        ("Ελληνικά γάτα", "ellinika-gata"),
        ("안녕하세요 고양이", "annyeonghaseyo-goyangi"),
        ("a 猫 on the moon", "a-mao-on-the-moon"),
        ("cat 🐱 dog", "cat-cat-dog"),
    ],
)
def test_slugify_transliterates_every_script(prompt: str, slug: str) -> None:
    """Non-Latin prompts keep a meaningful name: transliterated, each Chinese character a word of its own."""
    assert slugify(prompt) == slug


@pytest.mark.parametrize("prompt", ["🐱🚀🌕", "日本語のプロンプト", "一只猫在月光下", "Кот"])
def test_version_1_names_are_kept_for_jobs_queued_before(prompt: str) -> None:
    """Version 1 (jobs queued before transliteration) still drops what NFKD cannot make ASCII, so their names never change."""
    assert slugify(prompt, version=1) == "prompt"
    assert slugify("cat 🐱🐱 dog", version=1) == "cat-dog"
    assert slugify("Straße", version=1) == "strae"
    assert output_name(3, "Straße", 1) == "00003-strae.png"


def test_unknown_name_version_is_refused() -> None:
    """A job naming a version this tabfleetd does not know is an error, not a silent rename."""
    with pytest.raises(ValueError, match="unknown output name version 9"):
        slugify("x", version=9)


def test_slugify_long_prompt_is_cut_without_trailing_dash() -> None:
    """A long prompt is cut to max_len and a cut that lands on a dash drops it."""
    assert slugify("word " * 100) == ("word-" * 10)[:48]
    assert len(slugify("x" * 500)) == 48
    # Character 48 of the slug is a dash, so the result is 47 characters.
    assert slugify("a" * 47 + " bcd") == "a" * 47
    assert slugify("abc def ghi", max_len=8) == "abc-def"


def test_slugify_rejects_tiny_max_len() -> None:
    """A max_len too small for the fallback name is a programming error."""
    with pytest.raises(ValueError):
        slugify("anything", max_len=3)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_slugify_reserved_windows_names(name: str) -> None:
    """Names Windows reserves get a trailing dash, whatever their case or punctuation."""
    assert slugify(name) == f"{name}-"
    assert slugify(f"  {name.upper()}!! ") == f"{name}-"


def test_slugify_near_reserved_names_untouched() -> None:
    """Names that merely contain a reserved word are left alone."""
    assert slugify("con cat") == "con-cat"
    assert slugify("com10") == "com10"
    assert slugify("lpt0") == "lpt0"
    assert slugify("console") == "console"
    # Superscript digits normalise to plain ones and must still be caught.
    assert slugify("COM¹") == "com1-"


@pytest.mark.parametrize(
    "prompt, slug",
    [
        ("../x", "x"),
        ("..\\..\\windows\\system32", "windows-system32"),
        ("/etc/passwd", "etc-passwd"),
        ("a/b\\c:d*e?f\"g<h>i|j", "a-b-c-d-e-f-g-h-i-j"),
    ],
)
def test_slugify_path_separators(prompt: str, slug: str) -> None:
    """Path separators and characters Windows forbids never reach the name."""
    assert slugify(prompt) == slug


@pytest.mark.parametrize(
    "prompt",
    ["../x", "nul", "A" * 300, "🐱", "x/" * 40, "\x00\x01\x7f", "CON.txt", "-", "é" * 60, "aux:", "  .  ", "猫" * 40,
     "ℂ𝕆ℕ", "\u202ecod.exe", "ǅ ǈ"],
)
@pytest.mark.parametrize("version", [1, 2])
def test_slugify_is_always_safe(prompt: str, version: int) -> None:
    """Whatever the prompt and name version, the slug is short, ASCII, dash-joined and not a reserved name."""
    slug = slugify(prompt, version=version)
    assert SAFE_SLUG.fullmatch(slug), slug
    assert len(slug) <= 48
    assert slug not in RESERVED
    assert slug not in {".", ".."}


def test_output_name() -> None:
    """Output names are the zero-padded 1-based index, a dash, the slug and .png."""
    assert output_name(1, "A cat") == "00001-a-cat.png"
    assert output_name(123, "🐱") == "00123-cat.png"
    assert output_name(7, "nul") == "00007-nul-.png"
    assert output_name(123456, "x") == "123456-x.png"


def test_output_names_sort_in_input_order() -> None:
    """Zero padding makes a plain sort of the names follow input order."""
    names = [output_name(i, "same") for i in (1, 2, 10, 100, 9999)]
    assert sorted(names) == names


def test_output_name_rejects_index_zero() -> None:
    """Indexes are 1-based, so 0 is a programming error."""
    with pytest.raises(ValueError):
        output_name(0, "x")


# --- write_atomic ------------------------------------------------------------


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    """write_atomic creates a file, then replaces it whole, leaving no temp files."""
    target = tmp_path / "00001-a.png"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomic(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert os.listdir(tmp_path) == ["00001-a.png"]
    assert find_leftover_temps(tmp_path) == []


def test_write_atomic_uses_unique_hidden_temp_in_same_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call writes through its own hidden temp file next to the target, and fsyncs."""
    renames: list[tuple[str, str]] = []
    real_replace = os.replace
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def spy_replace(src: str, dst: str, **dir_fds: int) -> None:
        renames.append((str(src), str(dst)))
        # A crash at this moment would leave src behind; a restart must find it.
        assert find_leftover_temps(tmp_path) == [tmp_path / src]
        real_replace(src, dst, **dir_fds)

    def spy_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(outdir.os, "replace", spy_replace)
    monkeypatch.setattr(outdir.os, "fsync", spy_fsync)
    target = tmp_path / "out.png"
    write_atomic(target, b"a")
    write_atomic(target, b"b")
    assert len(renames) == 2
    assert renames[0][0] != renames[1][0]
    for src, dst in renames:  # names relative to the directory's fd
        assert "/" not in src and src.startswith(".") and src.endswith(".tmp")
        assert dst == target.name
    # The file and its directory, for each of the two calls.
    assert len(fsyncs) == 4


def test_write_atomic_failure_removes_temp_and_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the final rename fails the temp file is removed, the old file stays and the error propagates."""
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")

    def broken_replace(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outdir.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.png"]


def test_write_atomic_bad_data_removes_temp(tmp_path: Path) -> None:
    """An error while writing the data also cleans up the temp file."""
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x.png", "not bytes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_write_atomic_onto_directory_fails_cleanly(tmp_path: Path) -> None:
    """Replacing a directory fails and leaves no temp file behind."""
    (tmp_path / "sub").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "sub", b"data")
    assert os.listdir(tmp_path) == ["sub"]


# --- claim_out_dir ------------------------------------------------------------


def test_claim_creates_dir_and_marker(tmp_path: Path) -> None:
    """Claiming a missing directory creates it, parents included, with a marker naming the job."""
    out = tmp_path / "a" / "b" / "out"
    claim_out_dir(out, "job-1")
    assert out.is_dir()
    assert (out / MARKER).read_text().strip() == "job-1"
    assert find_leftover_temps(out) == []


def test_claim_again_by_same_job(tmp_path: Path) -> None:
    """The same job may claim its own directory again, e.g. after a restart."""
    claim_out_dir(tmp_path, "job-1")
    (tmp_path / "00001-a.png").write_bytes(b"img")
    claim_out_dir(tmp_path, "job-1")
    assert (tmp_path / MARKER).read_text().strip() == "job-1"


def test_claim_existing_unmarked_dir(tmp_path: Path) -> None:
    """An existing directory without a marker can be claimed."""
    (tmp_path / "notes.txt").write_text("hi")
    claim_out_dir(tmp_path, "job-2")
    assert (tmp_path / MARKER).read_text().strip() == "job-2"


def test_claim_refuses_another_jobs_dir(tmp_path: Path) -> None:
    """A directory holding another job's marker is refused and the marker is left alone."""
    claim_out_dir(tmp_path, "job-1")
    with pytest.raises(OutDirError) as info:
        claim_out_dir(tmp_path, "job-2")
    assert str(info.value) == f"{tmp_path} already holds the output of another job (see its {MARKER}); choose another --out"
    with pytest.raises(OutDirError, match="already holds the output of job job-1;"):
        claim_out_dir(tmp_path, "job-2", known={"job-1"})
    assert (tmp_path / MARKER).read_text().strip() == "job-1"


def test_claim_refuses_a_file(tmp_path: Path) -> None:
    """An --out that is an existing file is refused with a clear message."""
    out = tmp_path / "out"
    out.write_text("not a dir")
    with pytest.raises(OutDirError, match="is not a directory"):
        claim_out_dir(out, "job-1")
    assert out.read_text() == "not a dir"


def test_claim_reports_why_it_cannot_create(tmp_path: Path) -> None:
    """When the directory cannot be created the OS reason is in the message."""
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    with pytest.raises(OutDirError) as info:
        claim_out_dir(out, "job-1")
    message = str(info.value)
    assert message.startswith(f"cannot use {out} as the output directory: ")
    assert f"{tmp_path / 'file'} is not a directory" in message


def test_claim_reports_uncreatable_dir(tmp_path: Path) -> None:
    """A directory that cannot be created (its parent is a file) is refused with the OS reason, even as root."""
    parent = tmp_path / "plain-file"
    parent.write_text("x")
    with pytest.raises(OutDirError, match="plain-file is not a directory"):
        claim_out_dir(parent / "out", "job-1")


# --- manifest -----------------------------------------------------------------


def test_manifest_append_and_read(tmp_path: Path) -> None:
    """Appended records come back in order, one compact key-sorted UTF-8 line each."""
    append_manifest(tmp_path, {"index": 1, "file": "00001-a.png", "prompt": "café"})
    append_manifest(tmp_path, {"index": 2, "file": "00002-b.png", "prompt": "b"})
    raw = (tmp_path / MANIFEST).read_bytes()
    assert raw == (
        '{"file":"00001-a.png","index":1,"prompt":"café"}\n'
        '{"file":"00002-b.png","index":2,"prompt":"b"}\n'
    ).encode()
    assert read_manifest(tmp_path) == [
        {"index": 1, "file": "00001-a.png", "prompt": "café"},
        {"index": 2, "file": "00002-b.png", "prompt": "b"},
    ]


def test_read_missing_manifest(tmp_path: Path) -> None:
    """A directory without a manifest has no records."""
    assert read_manifest(tmp_path) == []


def test_read_manifest_ignores_torn_last_line(tmp_path: Path) -> None:
    """A last line cut short by a crash (no newline) is ignored."""
    (tmp_path / MANIFEST).write_bytes(b'{"index":1}\n{"index":2}\n{"ind')
    assert read_manifest(tmp_path) == [{"index": 1}, {"index": 2}]


def test_read_manifest_ignores_complete_looking_torn_line(tmp_path: Path) -> None:
    """A last line without its newline is ignored even when it happens to parse."""
    (tmp_path / MANIFEST).write_bytes(b'{"index":1}\n{"index":2}')
    assert read_manifest(tmp_path) == [{"index": 1}]


def test_append_after_torn_line_drops_the_fragment(tmp_path: Path) -> None:
    """Appending after a crash first drops the torn fragment so the new record stays readable."""
    (tmp_path / MANIFEST).write_bytes(b'{"index":1}\n{"index":2,"fi')
    append_manifest(tmp_path, {"index": 2})
    assert (tmp_path / MANIFEST).read_bytes() == b'{"index":1}\n{"index":2}\n'
    assert read_manifest(tmp_path) == [{"index": 1}, {"index": 2}]


def test_append_after_torn_only_line(tmp_path: Path) -> None:
    """A torn fragment with no complete line before it is dropped entirely."""
    (tmp_path / MANIFEST).write_bytes(b'{"ind')
    append_manifest(tmp_path, {"index": 1})
    assert read_manifest(tmp_path) == [{"index": 1}]


def test_read_manifest_refuses_corrupt_middle_line(tmp_path: Path) -> None:
    """A complete line that is not a JSON object is reported with its line number."""
    (tmp_path / MANIFEST).write_bytes(b'{"index":1}\ngarbage\n{"index":3}\n')
    with pytest.raises(OutDirError, match=r"manifest\.jsonl line 2 is not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_bytes(b'{"index":1}\n[1]\n')
    with pytest.raises(OutDirError, match=r"line 2 is not a JSON object"):
        read_manifest(tmp_path)


def test_rewrite_manifest(tmp_path: Path) -> None:
    """rewrite_manifest replaces every line at once and leaves no temp file."""
    for i in range(3):
        append_manifest(tmp_path, {"index": i + 1})
    rewrite_manifest(tmp_path, [{"index": 1, "sha256": "ab"}, {"index": 3}])
    assert (tmp_path / MANIFEST).read_bytes() == b'{"index":1,"sha256":"ab"}\n{"index":3}\n'
    assert read_manifest(tmp_path) == [{"index": 1, "sha256": "ab"}, {"index": 3}]
    assert find_leftover_temps(tmp_path) == []
    rewrite_manifest(tmp_path, [])
    assert read_manifest(tmp_path) == []


# --- find_leftover_temps ------------------------------------------------------


def test_find_leftover_temps(tmp_path: Path) -> None:
    """Only hidden ".tmp" files are reported, sorted; images, the marker and directories are not."""
    for name in [".00002-b.png.123.ab.tmp", ".00001-a.png.99.cd.tmp", "visible.tmp", "00001-a.png", MARKER]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".dir.tmp").mkdir()
    assert find_leftover_temps(tmp_path) == [
        tmp_path / ".00001-a.png.99.cd.tmp",
        tmp_path / ".00002-b.png.123.ab.tmp",
    ]


def test_find_leftover_temps_missing_dir(tmp_path: Path) -> None:
    """A directory that does not exist has no leftovers."""
    assert find_leftover_temps(tmp_path / "missing") == []
