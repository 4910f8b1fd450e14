"""The user's files: read only when regular and small enough, written never over an existing
one unless asked, never half-written, and a full disk said as such."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dicom_bq.errors import EXIT_BAD_INPUT, EXIT_FAILED, DicomBqError

# Nesting deeper than this in a file the tool reads is refused before parsing: Python's json and
# PyYAML parse recursively, and a few thousand levels exhaust the interpreter's stack
# (RecursionError). No file dicom-bq reads nests more than a handful of levels.
MAX_NESTING = 100
MAX_JSON_BYTES = 16 * 1024 * 1024


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_problem(path: Path | str, *, limit: int) -> str | None:
    """Why `path` may not be read as a file of at most `limit` bytes (None when it may): missing,
    a folder, a pipe or a device (which could block the read or never end), or too large. Only
    stat(2) is used: nothing is opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as error:
        return f"it cannot be read ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"it is {_kind(info.st_mode)}, not a regular file: save the content to a file"
    if info.st_size > limit:
        return f"it is {info.st_size} bytes, more than the {limit} bytes allowed here"
    return None


def read_bounded(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or DicomBqError (exit 2) naming
    `what` and why: a FIFO, a device (/dev/zero) or a folder is refused before any read, so the
    read can neither block nor run forever, and a file larger than `limit` is refused too.

    The file is opened without blocking (O_NONBLOCK: opening a FIFO for reading otherwise waits
    for a writer, POSIX open(2)) and checked again on the open descriptor, so a file swapped
    after the first check is still refused."""
    problem = regular_file_problem(path, limit=limit)
    if problem:
        raise DicomBqError(f"{what}: cannot read it: {problem}", EXIT_BAD_INPUT)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise DicomBqError(f"{what}: cannot read it ({error.strerror})", EXIT_BAD_INPUT) from None
    with os.fdopen(descriptor, "rb") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise DicomBqError(f"{what}: cannot read it: it is {_kind(mode)}", EXIT_BAD_INPUT)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise DicomBqError(
            f"{what}: cannot read it: it is more than the {limit} bytes allowed here",
            EXIT_BAD_INPUT,
        )
    return data


# A JSON string (with its escapes), or one character of anything else.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON `text` (0 for a scalar), counted without
    parsing, so text nested too deep for json.loads can be measured."""
    deepest = depth = 0
    for char in _JSON_STRING.sub('""', text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_json(text: str, *, what: str, max_depth: int = MAX_NESTING) -> Any:
    """json.loads of `text` nested at most `max_depth` deep (json_depth); deeper is a
    DicomBqError naming `what`, never a RecursionError. JSONDecodeError is left to the caller,
    which knows how to say where the text came from."""
    depth = json_depth(text)
    if depth > max_depth:
        raise DicomBqError(
            f"{what} nests {depth} levels deep; at most {max_depth} are read here: is it the "
            "right file?",
            EXIT_BAD_INPUT,
        )
    return json.loads(text)


def yaml_shape(text: str, *, what: str, max_depth: int = MAX_NESTING) -> tuple[int, int]:
    """How deep the collections of YAML `text` nest, and how many aliases it uses, from its
    event stream; DicomBqError (exit 2) naming `what` when deeper than `max_depth`. For readers
    of YAML: call it before loading, whose composer recurses once a level (RecursionError).

    Events come from libyaml when PyYAML has it (yaml.CBaseLoader): PyYAML's own scanner takes
    time quadratic in the flow nesting (seconds for a few thousand "["), libyaml is linear and
    refuses more than 1000 levels itself. YAMLError is left to the caller."""
    import yaml

    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    deepest = depth = aliases = 0
    too_deep = DicomBqError(
        f"{what} nests its lists and maps more than {max_depth} levels deep: is it the right file?",
        EXIT_BAD_INPUT,
    )
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                deepest = max(deepest, depth)
                if deepest > max_depth:
                    raise too_deep
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
    except yaml.YAMLError as error:
        if "nesting depth" in str(getattr(error, "problem", "")):  # libyaml's own limit
            raise too_deep from None
        raise
    return deepest, aliases


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(DicomBqError):
    """A write that found no space: names the file and where temporary files go."""

    def __init__(self, path: Path | str | None) -> None:
        where = f" writing {path}" if path else ""
        folder = Path(path).absolute().parent if path else None
        room = f"free space in {folder}, or" if folder else "free space, or"
        super().__init__(
            f"no space left on the device{where}: {room} point TMPDIR at a file system with "
            f"room (temporary files go to TMPDIR, now {tempfile.gettempdir()})",
            EXIT_FAILED,
        )
        self.path = path


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _DISK_FULL


@contextlib.contextmanager
def disk_full_names(path: Path | str) -> Iterator[None]:
    """Inside it, a write that finds the disk full raises DiskFullError naming `path`: write(2)
    reports ENOSPC without a file name."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(error.filename or path) from None
        raise


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
        with disk_full_names(path), temporary.open("xb") as out:
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
