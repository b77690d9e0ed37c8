"""Text from the status table and the queues, made safe to print on a terminal.

Rows hold what producers wrote (a rejected request's reason quotes its fields, unknown field names are named
as sent): an escape sequence in them could recolour, retitle or rewrite the operator's terminal (ESC, CSI,
OSC, BEL), a carriage return or backspace could hide text, a bidi override could make one id read as
another. Every such character is printed as a visible escape instead: `\\x1b`, `\\r`, `\\u202e`.
`--json` output needs none of this: `json.dumps` escapes all of them (and every non-ASCII character).
"""

from __future__ import annotations

import unicodedata

# Cc: C0 and C1 controls (ESC, BEL, CR, BS, DEL, CSI U+009B); Cf: format characters (bidi overrides and
# isolates, zero-width characters, BOM); Zl/Zp: line and paragraph separators; Cs/Co/Cn: surrogates,
# private use, unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def printable(text: object) -> str:
    """`text` with every character that could act on a terminal shown as an escape, the rest as it is."""
    value = str(text)
    if value.isascii() and value.isprintable():
        return value
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in value)


def _escape(character: str) -> str:
    code = ord(character)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(character)
    if named:
        return named
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
