"""Writing the user's files: never over an existing one unless asked, never half-written."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dicom_bq.errors import DicomBqError


class OutputExistsError(DicomBqError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists: pass --force to replace it, or name another file")
        self.path = path


def check_output(path: Path, replace: bool = False) -> None:
    """Refuse, before any work, an output that cannot or may not be written: an existing file
    without `replace` (OutputExistsError), a folder, or a file in a folder that does not exist."""
    if path.is_dir():
        raise DicomBqError(f"{path} is a folder: give a file name")
    if path.exists():
        if not replace and path.is_file():
            raise OutputExistsError(path)
    elif not path.absolute().parent.is_dir():
        raise DicomBqError(
            f"cannot write {path}: the folder {path.absolute().parent} does not exist"
        )


@contextlib.contextmanager
def atomic_output(path: Path, replace: bool = False) -> Iterator[BinaryIO]:
    """A binary stream whose content becomes `path` only when the block ends without error.

    It writes a hidden temporary file in the same folder, then renames it over `path` (which
    keeps its permissions; rename is atomic on one file system, POSIX rename(2)); on any error,
    or an interruption, the temporary file is removed and `path` is left as it was. Without
    `replace`, an existing file is refused (OutputExistsError), also if one appears while
    writing. A device or pipe (/dev/stdout) is written directly.
    """
    check_output(path, replace)
    target = Path(os.path.realpath(path))  # through a symbolic link, to the file it names
    try:
        mode: int | None = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with target.open("wb") as out:
            yield out
        return
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            temporary.chmod(stat.S_IMODE(mode))
        if replace:
            temporary.replace(target)
        else:
            try:
                os.link(temporary, target)  # fails, unlike a rename, when the target exists
            except FileExistsError:
                raise OutputExistsError(path) from None
            except OSError:  # a file system without hard links
                if target.exists():
                    raise OutputExistsError(path) from None
                temporary.replace(target)
            temporary.unlink(missing_ok=True)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str, *, replace: bool) -> None:
    with atomic_output(path, replace) as out:
        out.write(text.encode("utf-8"))
