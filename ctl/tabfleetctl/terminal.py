"""Text from the daemon made safe to print: prompts and names are anyone's input, the terminal is yours."""

from __future__ import annotations

import re

# C0 and C1 controls and DEL (escape sequences, carriage returns, bells), and the bidirectional
# overrides that make a line display in another order than it reads.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(text: object) -> str:
    """`text` as one line with every control character shown as an escape (\\e, \\n, \\x07, \\u202e)."""
    return _UNPRINTABLE.sub(_escape, str(text))
