"""Parse a prompt file (.txt, .csv or .jsonl) into a list of prompts.

Every problem becomes a PromptFileError that names the file and, where one
applies, the 1-based physical line, so a user can open the file and fix it.
A file is accepted whole or not at all: no partial list is ever returned.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import PurePath
from typing import Callable, Iterator

from ..errors import PromptFileError

SUFFIXES = (".txt", ".csv", ".jsonl")

_BOM = b"\xef\xbb\xbf"
# The same line breaks the csv module sees through StringIO(newline=""), so
# line numbers agree across formats and with what an editor shows.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")


def parse_prompts(filename: str, data: bytes, *, max_chars: int = 4000) -> list[str]:
    """Return the prompts in ``data`` in input order; the format comes from the suffix."""
    suffix = PurePath(filename).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        shown = f"'{suffix}'" if suffix else "(no suffix)"
        raise PromptFileError(filename, None, f"unknown format {shown}: use .txt, .csv or .jsonl")
    text = _decode(filename, data)
    prompts = []
    for line, prompt in parser(filename, text):
        prompts.append(_checked(filename, line, prompt, max_chars))
    if not prompts:
        raise PromptFileError(
            filename, None, "no prompts found (the file is empty or holds only blank lines and comments)"
        )
    return prompts


def _decode(filename: str, data: bytes) -> str:
    # Editors on Windows like to start UTF-8 files with a BOM; it is not part of a prompt.
    body = data[len(_BOM):] if data.startswith(_BOM) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        breaks = list(_LINE_BREAK_BYTES.finditer(body, 0, e.start))
        line_start = breaks[-1].end() if breaks else 0
        # A byte column, since the bad byte is exactly what a hex viewer must find.
        column = e.start - line_start + 1
        problem = f"not valid UTF-8 text (byte 0x{body[e.start]:02x} at column {column})"
        raise PromptFileError(filename, len(breaks) + 1, problem) from None


def _checked(filename: str, line: int, prompt: str, max_chars: int) -> str:
    if "\x00" in prompt:
        raise PromptFileError(filename, line, "prompt contains a NUL character")
    if len(prompt) > max_chars:
        raise PromptFileError(
            filename, line, f"prompt is {len(prompt)} characters, over the limit of {max_chars}"
        )
    return prompt


def _parse_txt(filename: str, text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        prompt = raw.strip()
        if prompt and not prompt.startswith("#"):
            yield number, prompt


def _parse_csv(filename: str, text: str) -> Iterator[tuple[int, str]]:
    # strict=True turns a quote that is never closed into an error instead of
    # silently swallowing the rest of the file into one prompt.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    column: int | None = None
    while True:
        # A quoted cell may span lines, so a row starts one past the last line read.
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise PromptFileError(filename, start, f"malformed CSV row ({e})") from None
        if not row:
            continue
        if column is None:
            column = _prompt_column(filename, start, row)
            continue
        if column >= len(row):
            raise PromptFileError(
                filename, start, f"row has {len(row)} cells but 'prompt' is column {column + 1}"
            )
        # Spreadsheets save line breaks inside cells as \r\n; prompts use \n.
        prompt = row[column].replace("\r\n", "\n").replace("\r", "\n").strip()
        if prompt:
            yield start, prompt


def _prompt_column(filename: str, line: int, header: list[str]) -> int:
    names = [name.strip() for name in header]
    matches = [i for i, name in enumerate(names) if name.lower() == "prompt"]
    if not matches:
        raise PromptFileError(filename, line, f"no 'prompt' column (columns: {', '.join(names)})")
    if len(matches) > 1:
        raise PromptFileError(filename, line, "more than one 'prompt' column")
    return matches[0]


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


def _parse_jsonl(filename: str, text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise PromptFileError(filename, number, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(value, dict):
            raise PromptFileError(
                filename, number, f"expected a JSON object, got {_JSON_TYPES.get(type(value), 'a value')}"
            )
        if "prompt" not in value:
            raise PromptFileError(filename, number, 'object has no "prompt" key')
        prompt = value["prompt"]
        if not isinstance(prompt, str):
            raise PromptFileError(
                filename, number, f'"prompt" must be a string, got {_JSON_TYPES.get(type(prompt), "a value")}'
            )
        # Unlike a blank CSV cell (spreadsheets leave trailing empty rows), a
        # JSON line was written on purpose, so an empty prompt is a mistake.
        if not prompt.strip():
            raise PromptFileError(filename, number, '"prompt" is blank')
        yield number, prompt.strip()


_PARSERS: dict[str, Callable[[str, str], Iterator[tuple[int, str]]]] = {
    ".txt": _parse_txt,
    ".csv": _parse_csv,
    ".jsonl": _parse_jsonl,
}
