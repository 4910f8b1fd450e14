"""Quoting user input and Google's answers back safely: short, printable, no capabilities."""

from __future__ import annotations

import re
import reprlib

EXCERPT = 60
# The narrowest output drawn, whatever COLUMNS says: rich prints nothing at all at width 0, and
# below this names would be folded a few letters a line.
MIN_WIDTH = 40
_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11's Repr takes none
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = EXCERPT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def _bounded_repr(value: object) -> str:
    if isinstance(value, (float, bool)) or value is None:
        return str(value)
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long for str() (sys.set_int_max_str_digits)
        return f"<{type(value).__name__} too large to show>"


# A resumable upload's session URL (upload_id=...) is a write capability: whoever holds it may
# finish the upload (https://cloud.google.com/storage/docs/resumable-uploads#session-uris).
_SESSION_URL = re.compile(r"https?://\S*upload_id=\S*")


def printable(data: bytes | str, limit: int = EXCERPT) -> str:
    """The start of `data` for a message: at most `limit` characters, control and other
    unprintable characters escaped (\\x00, \\x1b, \\u202e), '...' when cut."""
    text = (
        data[: limit * 4].decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    )
    shown: list[str] = []
    size = 0
    for char in text:
        piece = char if char.isprintable() else repr(char)[1:-1]
        if size + len(piece) > limit:
            return "".join(shown) + "..."
        shown.append(piece)
        size += len(piece)
    cut = isinstance(data, bytes) and len(data) > limit * 4
    return "".join(shown) + ("..." if cut else "")


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """repr() of at most `limit` characters of a value, control characters escaped. A value
    that is not text is shown through reprlib, a few levels and items deep: str() of a list
    nested thousands deep is a RecursionError, and of a huge one a huge string."""
    text = value if isinstance(value, str) else _bounded_repr(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def without_capabilities(message: str) -> str:
    return _SESSION_URL.sub("<upload session URL withheld>", message)


# Terminal escape sequences another program may print: CSI (ESC [ ... final byte, e.g. colours
# and cursor moves), OSC (ESC ] ... BEL or ESC \, e.g. a window title or a hyperlink), the other
# string commands (DCS ESC P, SOS ESC X, PM ESC ^, APC ESC _, ended by ESC \), and two-byte
# escapes (ESC and one byte); also their 8-bit C1 forms (0x9b CSI, 0x9d OSC, 0x90 DCS ...).
# ECMA-48, sections 5.4 (control sequences) and 8.3.89 (OSC).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)
SUBPROCESS_LINES = 40
SUBPROCESS_BYTES = 4096


def terminal_safe(text: str) -> str:
    """`text` with every terminal escape sequence removed and any other control character but a
    line end or a tab shown escaped (\\x07): what another program printed, safe to print."""
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    return "".join(
        char if char in "\n\t" or char.isprintable() else repr(char)[1:-1] for char in text
    )


def output_excerpt(
    data: bytes | str, *, lines: int = SUBPROCESS_LINES, limit: int = SUBPROCESS_BYTES
) -> str:
    """The end of a subprocess's output, for a message: its last `lines` lines, at most `limit`
    characters, terminal-safe (see terminal_safe), after a line saying how many lines were left
    out. The end, because that is where a program says why it failed."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    raw = raw.replace(b"\r\n", b"\n").strip(b"\n")
    total = raw.count(b"\n") + 1 if raw else 0
    text = terminal_safe(raw[-limit:].decode("utf-8", "replace"))
    kept = text.split("\n")
    if len(raw) > limit and len(kept) > 1:
        kept = kept[1:]  # the first line was cut: drop what is left of it
    kept = kept[-lines:] if raw else []
    shown = "\n".join(kept)
    if len(shown) > limit:  # escaped control characters take more room than the bytes did
        shown = "..." + shown[-(limit - 3) :]
    left_out = total - len(kept)
    return (f"[... {left_out} earlier lines left out]\n" if left_out > 0 else "") + shown
