"""Quoting user input and Google's answers back safely: short, printable, no capabilities."""

from __future__ import annotations

import re

EXCERPT = 60
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
    """repr() of at most `limit` characters of a value, control characters escaped."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def without_capabilities(message: str) -> str:
    return _SESSION_URL.sub("<upload session URL withheld>", message)
