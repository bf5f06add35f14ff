"""Text an agent wrote, made inert before a person reads it. Pure.

An agent controls its `reasoning`, `strategy`, notes, even symbols it tries. Shown raw in a terminal, escape
sequences move the cursor and erase lines (an agent can erase the real order line and print a fake one);
bidirectional controls reorder what is displayed; zero-width and other invisible characters hide text. So
every such character is shown as a visible escape instead (`\\x1b`, `U+202E`), never passed through, and
line breaks become spaces where one line is expected. Printable text, including non-Latin scripts, is kept.
"""

from __future__ import annotations

import unicodedata

# Bidirectional embeddings, overrides and isolates, and the invisible direction marks.
BIDI_CONTROLS = frozenset(
    {chr(c) for c in range(0x202A, 0x202F)} | {chr(c) for c in range(0x2066, 0x206A)} | {"\u200e", "\u200f", "\u061c"})
# Unicode categories that draw nothing: controls (C0, DEL, C1), format characters (zero-width spaces and joiners,
# the BOM, bidi controls, invisible operators, tag characters), unassigned and private-use code points, and
# surrogates; plus line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})
_LINE_BREAKS = frozenset({"\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"})


def _visible(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"U+{code:04X}"


def inert(text: str, *, one_line: bool = True) -> str:
    """`text` with every control, escape, bidi and invisible character shown as a visible escape.

    one_line=True (a field on one line): line breaks and tabs become single spaces, runs of whitespace are
    collapsed and the ends trimmed. one_line=False: newlines are kept (only "\\n"), everything else as above.
    """
    out: list[str] = []
    for char in text:
        if char in _LINE_BREAKS or char == "\t":
            if one_line or char == "\t":
                out.append(" ")
            elif char in ("\n", "\u2028", "\u2029", "\x85"):
                out.append("\n")
            elif char == "\r":
                continue  # \r\n is one break; a lone \r would move the cursor back over the line
            else:
                out.append(_visible(char))
            continue
        if char in BIDI_CONTROLS or unicodedata.category(char) in _HIDDEN_CATEGORIES:
            out.append(_visible(char))
            continue
        out.append(char)
    result = "".join(out)
    if one_line:
        result = " ".join(part for part in result.split(" ") if part)
    return result
