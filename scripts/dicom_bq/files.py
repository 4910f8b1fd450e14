"""Writing the user's files: never over an existing one unless asked, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dicom_bq.errors import DicomBqError


def check_target(path: Path, *, replace: bool, flag: str = "--force") -> None:
    """Refuse, before any work, an output that cannot or may not be written."""
    if path.is_dir():
        raise DicomBqError(f"{path} is a folder: name a file to write")
    if not path.parent.is_dir():
        raise DicomBqError(f"the folder of {path} does not exist: create it first")
    if path.exists() and not replace:
        raise DicomBqError(f"{path} exists: pass {flag} to replace it, or name another file")


@contextlib.contextmanager
def atomic_output(path: Path, *, replace: bool, flag: str = "--force") -> Iterator[IO[str]]:
    """A text file written next to `path` and renamed over it only once complete: a failure
    (or Ctrl-C) leaves `path` as it was (os.replace is atomic on one file system, POSIX
    rename(2))."""
    check_target(path, replace=replace, flag=flag)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            yield stream
        if path.exists() and not replace:  # appeared while we wrote
            raise DicomBqError(f"{path} appeared meanwhile: pass {flag} to replace it")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text_atomically(path: Path, text: str, *, replace: bool, flag: str = "--force") -> None:
    with atomic_output(path, replace=replace, flag=flag) as stream:
        stream.write(text)
