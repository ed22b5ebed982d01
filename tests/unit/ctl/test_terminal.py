"""Text from the daemon made safe for a terminal."""

from __future__ import annotations

from tabfleetctl.terminal import printable


def test_escape_sequences_and_controls_become_visible() -> None:
    """ESC, BEL, CR, newlines, C1 controls and bidi overrides are shown as escapes; ordinary text is untouched."""
    assert printable("\x1b]0;owned\x07 title\r\n") == "\\e]0;owned\\x07 title\\r\\n"
    assert printable("a\x9bb\x7fc\u202ed") == "a\\x9bb\\x7fc\\u202ed"
    assert printable("un château, 東京, tab\there") == "un château, 東京, tab\\there"
    assert printable(42) == "42"
