"""Unit tests for tabfleetd.control.prompts: the three formats and every way a file can be refused."""

from __future__ import annotations

import pytest

from tabfleetd.errors import PromptFileError
from tabfleetd.control.prompts import SUFFIXES, parse_prompts


def refused(filename: str, data: bytes, **kwargs: int) -> PromptFileError:
    with pytest.raises(PromptFileError) as info:
        parse_prompts(filename, data, **kwargs)
    return info.value


def assert_where(error: PromptFileError, filename: str, line: int | None) -> None:
    assert error.filename == filename
    assert error.line == line
    where = f"{filename} line {line}: " if line is not None else f"{filename}: "
    assert str(error).startswith(where), str(error)


# --- formats ------------------------------------------------------------------


def test_suffixes_constant() -> None:
    """SUFFIXES lists exactly the three accepted formats."""
    assert SUFFIXES == (".txt", ".csv", ".jsonl")


def test_txt_skips_blanks_and_comments_and_strips() -> None:
    """A .txt file gives one stripped prompt per line, without blank lines or comments."""
    data = b"# header comment\n  a red fox  \n\n   # indented comment\n\tblue sky\t\nnot # a comment\n"
    assert parse_prompts("p.txt", data) == ["a red fox", "blue sky", "not # a comment"]


def test_txt_without_final_newline() -> None:
    """The last line counts even when the file does not end with a newline."""
    assert parse_prompts("p.txt", b"one\ntwo") == ["one", "two"]


def test_suffix_is_case_insensitive_and_may_have_directories() -> None:
    """The suffix decides the format whatever its case, and a path in the name is fine."""
    assert parse_prompts("dir/PROMPTS.TXT", b"x\n") == ["x"]
    assert parse_prompts("a.b/Prompts.JsonL", b'{"prompt": "y"}\n') == ["y"]


def test_crlf_line_endings_txt() -> None:
    """CRLF endings are not part of the prompt and do not shift line numbers."""
    assert parse_prompts("p.txt", b"one\r\ntwo\r\n\r\nthree\r\n") == ["one", "two", "three"]
    error = refused("p.txt", b"one\r\ntwo\r\n\r\nab\x00c\r\n")
    assert_where(error, "p.txt", 4)


def test_bom_is_stripped() -> None:
    """A UTF-8 BOM is dropped rather than becoming part of the first prompt or header."""
    bom = b"\xef\xbb\xbf"
    assert parse_prompts("p.txt", bom + b"first\nsecond\n") == ["first", "second"]
    assert parse_prompts("p.csv", bom + b"prompt\nfirst\n") == ["first"]
    assert parse_prompts("p.jsonl", bom + b'{"prompt": "first"}\n') == ["first"]


def test_non_ascii_prompts_survive() -> None:
    """Non-ASCII text is decoded as UTF-8 and kept as is."""
    assert parse_prompts("p.txt", "café au lait ☕\n".encode()) == ["café au lait ☕"]


def test_csv_picks_prompt_column_case_insensitively() -> None:
    """The prompt column is found by name whatever its case and padding; other columns are ignored."""
    data = b"id, Prompt ,seed\n1,a cat,5\n2,  a dog  ,6\n"
    assert parse_prompts("p.csv", data) == ["a cat", "a dog"]


def test_csv_skips_blank_prompt_cells_and_blank_lines() -> None:
    """Rows whose prompt cell is blank, and empty lines, are skipped."""
    data = b"prompt,note\nfirst,x\n,empty\n   ,spaces\n\nsecond,y\n"
    assert parse_prompts("p.csv", data) == ["first", "second"]


def test_csv_quoted_multiline_prompt() -> None:
    """A quoted cell may hold commas, quotes and line breaks, and later line numbers stay right."""
    data = b'prompt\n"a, ""b"",\nc"\nnext\n' + b"x" * 11 + b"\n"
    assert parse_prompts("p.csv", data) == ['a, "b",\nc', "next", "x" * 11]
    error = refused("p.csv", data, max_chars=10)
    assert_where(error, "p.csv", 5)
    error = refused("p.csv", b'prompt\n"a\nb\nc"\nok\nab\x00\n')
    assert_where(error, "p.csv", 6)


def test_csv_crlf_multiline_cell_uses_newlines() -> None:
    """Line breaks inside a quoted cell from a CRLF file become plain newlines."""
    data = b'prompt\r\n"top\r\nbottom"\r\nlast\r\n'
    assert parse_prompts("p.csv", data) == ["top\nbottom", "last"]


def test_jsonl_reads_prompt_key_and_skips_blank_lines() -> None:
    """Each .jsonl line is an object whose "prompt" is taken; other keys and blank lines are ignored."""
    data = b'{"prompt": "one", "seed": 1}\n\n   \n{"prompt": "two \\u00e9"}\r\n'
    assert parse_prompts("p.jsonl", data) == ["one", "two é"]


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize("filename, shown", [("p.xyz", "'.xyz'"), ("p.JSON", "'.json'"), ("prompts", "(no suffix)")])
def test_unknown_suffix(filename: str, shown: str) -> None:
    """Any other suffix is refused with the list of accepted ones."""
    error = refused(filename, b"a prompt\n")
    assert_where(error, filename, None)
    assert error.problem == f"unknown format {shown}: use .txt, .csv or .jsonl"


def test_invalid_utf8_names_line_and_column() -> None:
    """Undecodable bytes are reported with their line, column and value."""
    error = refused("p.txt", b"good\nab\xffc\n")
    assert_where(error, "p.txt", 2)
    assert error.problem == "not valid UTF-8 text (byte 0xff at column 3)"


def test_invalid_utf8_after_bom_and_crlf() -> None:
    """A BOM does not count as a column and CRLF counts as one line break."""
    error = refused("p.csv", b"\xef\xbb\xbf\xc3(prompt\r\nx\r\n")
    assert_where(error, "p.csv", 1)
    assert error.problem == "not valid UTF-8 text (byte 0xc3 at column 1)"
    error = refused("p.jsonl", b'{"prompt": "a"}\r\n\r\n{"prompt": "\xe9"}\r\n')
    assert_where(error, "p.jsonl", 3)
    assert error.problem == "not valid UTF-8 text (byte 0xe9 at column 13)"


def test_utf16_file_is_refused() -> None:
    """A UTF-16 file (a common Windows export) is refused as not UTF-8."""
    error = refused("p.txt", "hello\n".encode("utf-16"))
    assert_where(error, "p.txt", 1)
    assert "not valid UTF-8" in error.problem


@pytest.mark.parametrize(
    "filename, data",
    [
        ("p.txt", b""),
        ("p.txt", b"\n  \n# only a comment\n\t\n"),
        ("p.txt", b"\xef\xbb\xbf"),
        ("p.csv", b""),
        ("p.csv", b"prompt,seed\n"),
        ("p.csv", b"prompt,seed\n,1\n  ,2\n"),
        ("p.jsonl", b"\n\n  \n"),
    ],
)
def test_no_prompts(filename: str, data: bytes) -> None:
    """A file without a single prompt is refused without a line number."""
    error = refused(filename, data)
    assert_where(error, filename, None)
    assert error.problem == "no prompts found (the file is empty or holds only blank lines and comments)"


def test_csv_without_prompt_column() -> None:
    """A .csv whose header has no prompt column is refused at line 1, listing the columns."""
    error = refused("p.csv", b"a, b\n1,2\n")
    assert_where(error, "p.csv", 1)
    assert error.problem == "no 'prompt' column (columns: a, b)"


def test_csv_with_two_prompt_columns() -> None:
    """Two columns named prompt are ambiguous and refused."""
    error = refused("p.csv", b"prompt,PROMPT\nx,y\n")
    assert_where(error, "p.csv", 1)
    assert "more than one 'prompt' column" in error.problem


def test_csv_row_too_short_for_prompt_column() -> None:
    """A row that stops before the prompt column is refused instead of silently dropped."""
    error = refused("p.csv", b"id,prompt\n1,a cat\n2\n")
    assert_where(error, "p.csv", 3)
    assert error.problem == "row has 1 cells but 'prompt' is column 2"


def test_csv_unclosed_quote() -> None:
    """A quote that is never closed is refused at the line where its row starts."""
    error = refused("p.csv", b'prompt\nfine\n"never closed\nmore\n')
    assert_where(error, "p.csv", 3)
    assert "malformed CSV row" in error.problem


@pytest.mark.parametrize(
    "line, problem",
    [
        (b"not json", "not valid JSON (Expecting value at column 1)"),
        (b'{"prompt": "a"', "not valid JSON (Expecting ',' delimiter at column 15)"),
        (b'["a cat"]', "expected a JSON object, got array"),
        (b'"a cat"', "expected a JSON object, got string"),
        (b"null", "expected a JSON object, got null"),
        (b'{"text": "a cat"}', 'object has no "prompt" key'),
        (b'{"prompt": 5}', '"prompt" must be a string, got number'),
        (b'{"prompt": null}', '"prompt" must be a string, got null'),
        (b'{"prompt": ["a"]}', '"prompt" must be a string, got array'),
        (b'{"prompt": "   "}', '"prompt" is blank'),
        (b'{"prompt": "a\\u0000b"}', "prompt contains a NUL character"),
    ],
)
def test_jsonl_bad_line(line: bytes, problem: str) -> None:
    """Each kind of bad .jsonl line is refused at its own line with a clear problem."""
    data = b'{"prompt": "ok"}\n\n' + line + b'\n{"prompt": "after"}\n'
    error = refused("batch.jsonl", data)
    assert_where(error, "batch.jsonl", 3)
    assert error.problem == problem


@pytest.mark.parametrize("filename", ["p.txt", "p.csv"])
def test_nul_in_prompt(filename: str) -> None:
    """A NUL character in a prompt is refused at its line."""
    header = b"prompt\n" if filename.endswith(".csv") else b""
    error = refused(filename, header + b"fine\nbad\x00prompt\n")
    assert_where(error, filename, 3 if header else 2)
    assert error.problem == "prompt contains a NUL character"


def test_prompt_over_limit() -> None:
    """A prompt longer than max_chars is refused at its line with its length; one at the limit is fine."""
    assert parse_prompts("p.txt", b"a" * 4000 + b"\n") == ["a" * 4000]
    error = refused("p.txt", b"short\n" + b"a" * 5000 + b"\n")
    assert_where(error, "p.txt", 2)
    assert error.problem == "prompt is 5000 characters, over the limit of 4000"


def test_limit_counts_characters_not_bytes() -> None:
    """The limit is in characters, so multi-byte text is not penalised."""
    assert parse_prompts("p.txt", "é".encode() * 10, max_chars=10) == ["é" * 10]
    error = refused("p.jsonl", b'{"prompt": "' + b"x" * 11 + b'"}\n', max_chars=10)
    assert_where(error, "p.jsonl", 1)
    assert error.problem == "prompt is 11 characters, over the limit of 10"


def test_first_error_in_file_order_wins() -> None:
    """When a file has several problems, the earliest line is reported."""
    data = b'{"prompt": "' + b"x" * 20 + b'"}\nnot json\n'
    error = refused("p.jsonl", data, max_chars=10)
    assert_where(error, "p.jsonl", 1)
