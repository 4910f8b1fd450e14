"""Quoting user input and Google's answers back safely: short, printable, no capabilities."""

from __future__ import annotations

import re

EXCERPT = 60
# A resumable upload's session URL (upload_id=...) is a write capability: whoever holds it may
# finish the upload (https://cloud.google.com/storage/docs/resumable-uploads#session-uris).
_SESSION_URL = re.compile(r"https?://\S*upload_id=\S*")


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """repr() of at most `limit` characters of a value, control characters escaped."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def without_capabilities(message: str) -> str:
    return _SESSION_URL.sub("<upload session URL withheld>", message)
