"""Export filter files: `/studies/UID[/series/UID[/instances/UID]]`, one a line.

Validation reads chunks of whole lines and checks a chunk of valid lines with a few passes of
bytes.translate and substring searches, all in C, so a file of valid lines is checked at close to
`grep -c` speed; a chunk that fails is cut into parts until the failing ones are small, and only
those are read line by line to say which line and why. Memory stays bounded on any input: a line
longer than the longest valid line is reported as soon as it is that long, only its start is
kept, and the rest of it is read past in blocks.

Building writes to a temporary file beside the target and renames it over the target at the
end, so a failed build leaves the target as it was. Normalizing keeps the first line of each
path and drops lines a broader line covers, sorting the paths on disk in bounded runs.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from dicom_bq.files import atomic_output, check_output, disk_full_names
from dicom_bq.texts import printable as excerpt

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

CHUNK = 64 * 1024  # small, so that a chunk and its translations stay in the CPU's cache
PARALLEL_FROM = 64 * 1024 * 1024
# A chunk that fails the fast check is cut in this many parts, down to SLOW_MAX bytes.
SPLIT = 8
SLOW_MAX = 8 * 1024
MAX_REPORTED = 20
MAX_UID = 64
# The longest valid line is a study, series and instance path with three 64-character UIDs:
# len("/studies/") + len("/series/") + len("/instances/") + 3 * 64 = 9 + 8 + 11 + 192 = 220
# characters, before its line ending.
MAX_LINE = len("/studies/") + len("/series/") + len("/instances/") + 3 * MAX_UID
LONGEST = f"/studies/, /series/, /instances/ and three {MAX_UID}-character UIDs"
EMPTY_FILE = (
    "the file is empty: a filter needs at least one path "
    "(an empty filter would export nothing, or everything)"
)

_DIGITS_AND_DOTS = b"0123456789."
# In a valid chunk, deleting digits and dots leaves only these line shapes.
_SHAPES_LF = (b"/studies//series//instances/\n", b"/studies//series/\n", b"/studies/\n")
_SHAPES_CRLF = tuple(shape[:-1] + b"\r\n" for shape in _SHAPES_LF)
# Each shape repeated to more than a chunk's length (a longer chunk is checked by counts).
_SHAPE_RUNS = tuple((shape, shape * (CHUNK // 8)) for shape in _SHAPES_LF + _SHAPES_CRLF)
# Substring searches run in C where a regex would try every position. Once the shapes are
# right, the level names are known, so these mappings drop their letters (keeping the one 'i'
# each has) and the line ends: less to search. In the first, '/' and '.' are '#', '0' stays and
# other digits are 'a': an empty UID or component, a stray dot or a trailing slash puts two '#'
# together (a line's last UID runs into the next line's "/studies/") or ends the chunk with '#';
# a leading zero is "#0" and a digit. In the second, UID characters are 'x'.
_LEVEL_LETTERS = bytes(set(b"studiesseriesinstances") - {ord("i")})
_SEPARATORS = bytes(
    ord("#") if c in b"/." else ord("a") if c in b"123456789" else c if c == ord("0") else ord("z")
    for c in range(256)
)
_SEPARATORS_DELETE = _LEVEL_LETTERS + b"\r\n"
_LEADING_ZERO = re.compile(rb"#0[0a]")
_UID_CHARS = bytes.maketrans(_DIGITS_AND_DOTS, b"x" * len(_DIGITS_AND_DOTS))
_UID_CHARS_DELETE = _LEVEL_LETTERS + b"i\r"
_LONG_UID = b"x" * (MAX_UID + 1)
# Control characters but tab, CR and LF: in a line they mean a binary file, not text.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BOM = b"\xef\xbb\xbf"
LEVELS = ("studies", "series", "instances")
LEVEL_NAMES = ("study", "series", "instance")


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str
    text: str


@dataclass
class FilterReport:
    path: str
    lines: int = 0
    errors: list[LineProblem] = field(default_factory=list)
    warnings: list[LineProblem] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0
    crlf_lines: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add(self, problem: LineProblem, strict: bool, warning: bool) -> None:
        if warning and not strict:
            self.warning_count += 1
            if len(self.warnings) < MAX_REPORTED:
                self.warnings.append(problem)
        else:
            self.error_count += 1
            if len(self.errors) < MAX_REPORTED:
                self.errors.append(problem)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "lines": self.lines,
            "ok": self.ok,
            "errors": self.error_count,
            "warnings": self.warning_count,
            "first_errors": [vars(p) for p in self.errors],
            "first_warnings": [vars(p) for p in self.warnings],
            "crlf_lines": self.crlf_lines,
        }


def _quoted(uid: str) -> str:
    return f"'{excerpt(uid)}'"


def _uid_problems(uid: str, level: str) -> tuple[str | None, list[str]]:
    """(error, warnings) for one UID."""
    if not uid:
        return f"the {level} UID is empty", []
    if not all(ch.isdigit() or ch == "." for ch in uid) or not uid.isascii():
        return f"the {level} UID {_quoted(uid)} has characters other than digits and dots", []
    components = uid.split(".")
    if any(not c for c in components):
        return f"the {level} UID {_quoted(uid)} has an empty component (a stray dot)", []
    warnings = []
    if any(len(c) > 1 and c.startswith("0") for c in components):
        warnings.append(
            f"the {level} UID {_quoted(uid)} has a component with a leading zero (DICOM PS3.5 9.1)"
        )
    if len(uid) > MAX_UID:
        warnings.append(f"the {level} UID is {len(uid)} characters long; DICOM allows {MAX_UID}")
    return None, warnings


def _start_error(head: bytes, length: int) -> str | None:
    """The error a line has from its start alone: a byte order mark, binary data, too long.

    `head` is the line's first MAX_LINE + 2 bytes (all of it when it is not too long) and
    `length` the length of the whole line without its line ending.
    """
    if head.startswith(_BOM):
        return "the line starts with a byte order mark: save the file as UTF-8 without BOM"
    control = _CONTROL.search(head)
    if control:
        what = "a NUL byte" if control.group() == b"\0" else "a control character"
        return (
            f"the line has {what} ({excerpt(control.group())}) at column {control.start() + 1}: "
            "the file is binary, not text"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        cut_short = length > len(head) and error.reason == "unexpected end of data"
        if not cut_short:
            return (
                f"the line is not UTF-8 text (byte 0x{head[error.start]:02x} at column "
                f"{error.start + 1}): the file is binary, not text"
            )
    if length > MAX_LINE:
        return f"the line is {length:,} bytes long: a valid line has at most {MAX_LINE} ({LONGEST})"
    if not head.isascii():
        return "the line has non-ASCII characters: UIDs are digits and dots"
    return None


def check_line(raw: bytes) -> tuple[str | None, list[str]]:
    """(error, warnings) for one line without its line ending."""
    error = _start_error(raw[: MAX_LINE + 2], len(raw))
    if error:
        return error, []
    line = raw.decode("ascii")  # ASCII without control characters but tab and CR, at most 220
    if not line:
        return "the line is empty", []
    if "\r" in line:
        return "a carriage return without a line feed: end lines with \\n or \\r\\n", []
    if " " in line or "\t" in line:
        return "the line has spaces or tabs", []
    if not line.startswith("/studies/"):
        return "the line must start with /studies/", []
    parts = line[1:].split("/")
    if line.endswith("/") and len(parts) % 2:
        return "the line ends with '/': remove it", []
    if len(parts) % 2:
        return f"{_quoted(parts[-1])} has no UID after it", []
    if len(parts) > 6:
        return "an instance is the deepest level: nothing may follow /instances/UID", []
    warnings: list[str] = []
    for depth in range(0, len(parts), 2):
        level, uid = parts[depth], parts[depth + 1]
        if level != LEVELS[depth // 2]:
            return f"expected '{LEVELS[depth // 2]}' where the line has {_quoted(level)}", []
        error, found = _uid_problems(uid, LEVEL_NAMES[depth // 2])
        if error:
            return error, []
        warnings += found
    return None, warnings


# -- validating ------------------------------------------------------------------------------


@dataclass
class _LongLine:
    """A line longer than MAX_LINE: its start, and its length once its end is found."""

    head: bytes
    length: int
    crlf: bool = False


def _pieces(stream: BinaryIO, size: int = -1) -> Iterator[bytes | _LongLine]:
    """Chunks of whole lines (the last may lack its newline) and over-long lines, in order.

    Reads `size` bytes, or to the end when negative. A chunk is CHUNK bytes and the rest of its
    last line, read with a limit: a line is over-long as soon as it passes MAX_LINE (plus a
    carriage return); only its start is kept, and the rest of it is read past block by block.
    """
    left = size

    def read(count: int, line: bool = False) -> bytes:
        nonlocal left
        if left >= 0:
            count = min(count, left)
            if not count:
                return b""
        data = stream.readline(count) if line else stream.read(count)
        if left >= 0:
            left -= len(data)
        return data

    pending = b""
    while True:
        block = read(CHUNK - len(pending))
        if pending:
            block, pending = pending + block, b""
        if not block:
            return
        if not block.endswith(b"\n"):
            tail = read(MAX_LINE + 2, line=True)
            if tail.endswith(b"\n") or len(tail) < MAX_LINE + 2:  # a line end, or the end
                block += tail
            else:
                cut = block.rfind(b"\n") + 1
                if cut:
                    yield block[:cut]
                start = block[cut:] + tail
                long = _LongLine(start[: MAX_LINE + 2], len(start))
                previous = tail[-1:]  # for a "\r\n" cut between two blocks
                while block := read(CHUNK):
                    end = block.find(b"\n")
                    if end < 0:
                        long.length += len(block)
                        previous = block[-1:]
                        continue
                    long.crlf = (block[end - 1 : end] if end else previous) == b"\r"
                    long.length += end - long.crlf
                    pending = block[end + 1 :]
                    break
                yield long
                continue
        yield block


def _shape_lines(shape: bytes) -> tuple[int, int] | None:
    """(lines, CRLF lines) when `shape` is nothing but valid line shapes, else None."""
    # Most chunks are lines of one shape: one comparison with a run of it, without a copy.
    for single, run in _SHAPE_RUNS:
        if len(shape) % len(single) == 0 and run.startswith(shape):
            lines = len(shape) // len(single)
            return lines, lines if single.endswith(b"\r\n") else 0
    # The shapes cannot overlap (each starts at "/studies/" and ends at its only newline), so
    # when their occurrences add up to the whole text, the text is nothing but valid shapes.
    shapes = _SHAPES_LF + _SHAPES_CRLF if b"\r" in shape else _SHAPES_LF
    counts = [shape.count(s) for s in shapes]
    if sum(n * len(s) for n, s in zip(counts, shapes, strict=True)) != len(shape):
        return None
    return sum(counts), sum(counts[len(_SHAPES_LF) :])


def _fast(chunk: bytes) -> tuple[int, int] | None:
    """(lines, CRLF lines) when every line of `chunk`, which ends in a newline, is valid and
    unremarkable (no warning), else None."""
    counts = _shape_lines(chunk.translate(None, _DIGITS_AND_DOTS))
    if counts is None:
        return None
    separators = chunk.translate(_SEPARATORS, _SEPARATORS_DELETE)
    if b"##" in separators or separators.endswith(b"#"):
        return None
    if b"#0" in separators and _LEADING_ZERO.search(separators):
        return None
    if _LONG_UID in chunk.translate(_UID_CHARS, _UID_CHARS_DELETE):
        return None
    return counts


def _check(chunk: bytes, report: FilterReport, strict: bool) -> None:
    """Count the lines of a chunk of whole lines and report its bad ones."""
    counts = _fast(chunk if chunk.endswith(b"\n") else chunk + b"\n")
    if counts is not None:
        report.lines += counts[0]
        report.crlf_lines += counts[1]
        return
    parts = _split(chunk) if len(chunk) > SLOW_MAX else [chunk]
    if len(parts) == 1:
        _slow(chunk, report, strict)
        return
    # Parts that pass are counted; failing ones are cut again while few fail (a bad line or
    # two), and read line by line when most do (a file of bad lines).
    checked = [_fast(part if part.endswith(b"\n") else part + b"\n") for part in parts]
    dense = sum(counts is None for counts in checked) * 2 > len(parts)
    for part, counts in zip(parts, checked, strict=True):
        if counts is not None:
            report.lines += counts[0]
            report.crlf_lines += counts[1]
        elif dense or len(part) <= SLOW_MAX:
            _slow(part, report, strict)
        else:
            _check(part, report, strict)


def _split(chunk: bytes) -> list[bytes]:
    """`chunk` cut at line starts into about SPLIT parts."""
    bounds = [0]
    for index in range(1, SPLIT):
        cut = chunk.find(b"\n", max(bounds[-1], len(chunk) * index // SPLIT)) + 1
        if 0 < cut < len(chunk) and cut > bounds[-1]:
            bounds.append(cut)
    bounds.append(len(chunk))
    return [chunk[a:b] for a, b in itertools.pairwise(bounds)]


def _slow(chunk: bytes, report: FilterReport, strict: bool) -> None:
    pieces = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        pieces.pop()
    for raw in pieces:
        report.lines += 1
        line = raw
        if raw.endswith(b"\r"):
            report.crlf_lines += 1
            line = raw[:-1]
        error, warnings = check_line(line)
        if not (error or warnings):
            continue
        text = excerpt(line)
        if error:
            report.add(LineProblem(report.lines, error, text), strict, warning=False)
        for warning in warnings:
            report.add(LineProblem(report.lines, warning, text), strict, warning=True)


def _validate(stream: BinaryIO, report: FilterReport, strict: bool, size: int = -1) -> None:
    for piece in _pieces(stream, size):
        if isinstance(piece, _LongLine):
            report.lines += 1
            report.crlf_lines += piece.crlf
            reason = _start_error(piece.head, piece.length) or "the line is too long"
            report.add(LineProblem(report.lines, reason, excerpt(piece.head)), strict, False)
        else:
            _check(piece, report, strict)


def _finish(report: FilterReport, strict: bool) -> FilterReport:
    if report.lines == 0:
        report.add(LineProblem(1, EMPTY_FILE, ""), strict, warning=False)
    return report


def validate_stream(stream: BinaryIO, name: str, strict: bool = False) -> FilterReport:
    report = FilterReport(name)
    _validate(stream, report, strict)
    return _finish(report, strict)


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges of about equal size, each starting at a line start.

    The search for a line start after each cut reads at most to the next cut, in blocks, so a
    file that is one long line costs one read and little memory.
    """
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as stream:
        for index in range(1, parts):
            position, stop = size * index // parts, size * (index + 1) // parts
            stream.seek(position)
            while position < stop:
                block = stream.read(min(1024 * 1024, stop - position))
                if not block:
                    break
                end = block.find(b"\n")
                if end >= 0:
                    bounds.append(max(position + end + 1, bounds[-1]))
                    break
                position += len(block)
    bounds.append(size)
    return [(start, end) for start, end in itertools.pairwise(bounds) if end > start]


def _validate_range(path: Path, start: int, end: int, strict: bool) -> FilterReport:
    report = FilterReport(str(path))
    with path.open("rb") as stream:
        stream.seek(start)
        _validate(stream, report, strict, end - start)
    return report


def _validate_range_to(send: Connection, path: Path, start: int, end: int, strict: bool) -> None:
    """_validate_range in a child process: the report, or the exception, goes to `send`."""
    try:
        result: FilterReport | BaseException = _validate_range(path, start, end, strict)
    except BaseException as error:  # sent to the parent, which raises it
        result = error
    send.send(result)
    send.close()


def validate_file(path: Path, strict: bool = False, workers: int | None = None) -> FilterReport:
    """Validate a file; big files are split by line between processes, one a core."""
    workers = workers or os.cpu_count() or 1
    size = path.stat().st_size
    ranges = _ranges(path, workers) if workers > 1 and size >= PARALLEL_FROM else [(0, size)]
    if len(ranges) == 1:
        return _finish(_validate_range(path, 0, size, strict), strict)
    import multiprocessing

    # The first range is checked here while child processes check the others.
    children = []
    try:
        for start, end in ranges[1:]:
            receive, send = multiprocessing.Pipe(duplex=False)
            child = multiprocessing.Process(
                target=_validate_range_to, args=(send, path, start, end, strict), daemon=True
            )
            child.start()
            send.close()
            children.append((child, receive))
        parts = [_validate_range(path, *ranges[0], strict)]
        for child, receive in children:
            try:
                part = receive.recv()
            except EOFError:
                raise RuntimeError(
                    f"a validating process ended with code {child.exitcode}"
                ) from None
            if isinstance(part, BaseException):
                raise part
            parts.append(part)
    finally:
        for child, receive in children:
            receive.close()
            if child.is_alive():
                child.terminate()
            child.join()
    report = FilterReport(str(path))
    for part in parts:
        for kind in ("errors", "warnings"):
            shifted = [
                LineProblem(p.line + report.lines, p.reason, p.text) for p in getattr(part, kind)
            ]
            getattr(report, kind).extend(shifted)
            del getattr(report, kind)[MAX_REPORTED:]
        report.error_count += part.error_count
        report.warning_count += part.warning_count
        report.crlf_lines += part.crlf_lines
        report.lines += part.lines
    return _finish(report, strict)


# -- building -------------------------------------------------------------------------------


def path_line(study: str, series: str | None = None, instance: str | None = None) -> str:
    line = f"/studies/{study}"
    if series:
        line += f"/series/{series}"
        if instance:
            line += f"/instances/{instance}"
    return line


class BuildError(ValueError):
    pass


EMPTY_BUILD = (
    "no paths to write: an empty filter would export nothing, or everything; nothing was written"
)


def _csv_lines(stream: TextIO, limit: int) -> Iterator[str]:
    """The lines of a CSV, refusing one longer than `limit` before reading all of it."""
    for number in itertools.count(1):
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            raise BuildError(
                f"CSV line {number} is longer than {limit:,} characters: is it the CSV of UIDs?"
            )
        yield line


CSV_LINE_MAX = 1024 * 1024


def lines_from_csv(stream: TextIO) -> Iterator[str]:
    """Paths from a CSV with StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID columns."""
    import csv

    reader = csv.DictReader(_csv_lines(stream, CSV_LINE_MAX))
    columns = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    try:
        fieldnames = reader.fieldnames
        if fieldnames is None or columns[0] not in fieldnames:
            raise BuildError(
                f"the CSV needs a header with {', '.join(columns)} (series and instance may be "
                "empty)"
            )
        for number, row in enumerate(reader, start=2):
            study, series, instance = ((row.get(c) or "").strip() for c in columns)
            if not study:
                raise BuildError(f"CSV line {number}: StudyInstanceUID is empty")
            if instance and not series:
                raise BuildError(
                    f"CSV line {number}: an SOPInstanceUID needs its SeriesInstanceUID"
                )
            line = path_line(study, series or None, instance or None)
            error, _ = check_line(line.encode())
            if error:
                raise BuildError(f"CSV line {number}: {error}")
            yield line
    except csv.Error as error:
        binary = "NUL" in str(error)
        raise BuildError(
            f"CSV line {reader.line_num}: "
            + ("the CSV has NUL bytes: it is binary, not text" if binary else str(error))
        ) from None
    except UnicodeDecodeError:
        raise BuildError(
            f"CSV line {reader.line_num + 1}: not UTF-8 text: the CSV is binary, not text"
        ) from None


def _write(lines: Iterable[str], out: BinaryIO) -> int:
    """Write `lines`, each ended by "\\n", in batches; returns how many."""
    count = 0
    iterator = iter(lines)
    while batch := list(itertools.islice(iterator, 8192)):
        out.write(("\n".join(batch) + "\n").encode("utf-8", "backslashreplace"))
        count += len(batch)
    return count


def write_lines(lines: Iterable[str], path: Path, *, replace: bool = True) -> int:
    """Write `lines` to `path` (atomically, see atomic_output); returns the count."""
    with atomic_output(path, replace) as out:
        return _write(lines, out)


def build_file(lines: Iterable[str], path: Path, normalized: bool, *, replace: bool = False) -> int:
    """Write `lines` to `path`, normalized through a spill file when asked; returns the count.

    The target is replaced only when the whole build succeeds (see atomic_output); without
    `replace` an existing file is refused before any line is read. No lines is a BuildError.
    """
    check_output(path, replace)
    with contextlib.ExitStack() as stack:
        if normalized:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            spill = Path(folder) / "lines.txt"
            with disk_full_names(spill), spill.open("wb") as out:
                _write(lines, out)
        with atomic_output(path, replace) as out:
            count = _write_normalized(spill, out) if normalized else _write(lines, out)
            if not count:
                raise BuildError(EMPTY_BUILD)
    return count


def build_from_spill(
    spill: Path, path: Path, normalized: bool, source: str, *, replace: bool = False
) -> int:
    """Lines spilled from stdin or a query: validated in bulk, then written (normalized).

    As build_file: `path` is replaced only by a complete build, and only with `replace`.
    """
    check_output(path, replace)
    report = validate_file(spill)
    if report.lines == 0:
        raise BuildError(f"{source}: {EMPTY_BUILD}")
    if not report.ok:
        first = report.errors[0]
        raise BuildError(
            f"{source} line {first.line}: {first.reason}: '{first.text}' "
            f"({report.error_count} bad lines in all)"
        )
    with atomic_output(path, replace) as out:
        if normalized:
            return _write_normalized(spill, out)
        with spill.open("rb") as source_file:
            shutil.copyfileobj(source_file, out, 1024 * 1024)
    return report.lines


# -- normalizing ------------------------------------------------------------------------------

# Sort keys are lines with '/' as \x01, below every other byte, so a path sorts right before
# the paths under it: "/studies/1.2" < "/studies/1.2/series/3" < "/studies/1.2.5".
_SORT_KEY = bytes.maketrans(b"/", b"\x01")
RUN_BYTES = 32 * 1024 * 1024  # paths sorted in memory at a time
MERGE_FILES = 64  # sorted runs merged at a time
MERGE_BUFFER = 64 * 1024


def _line_chunks(stream: BinaryIO, table: bytes | None = None) -> Iterator[list[bytes]]:
    """The non-empty lines of a validated file, without line ends, a chunk at a time (mapped by
    `table`); a line too long to be a path is an error."""
    for piece in _pieces(stream):
        if isinstance(piece, _LongLine):
            raise BuildError(f"a line is too long: a valid line has at most {MAX_LINE} characters")
        if table is not None:
            piece = piece.translate(table)
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n")
        lines = piece.split(b"\n")
        if not all(lines):
            lines = [line for line in lines if line]
        yield lines


def _sorted_records(path: Path, folder: Path) -> Iterator[bytes]:
    """`key \\0 number \\n` of each line, sorted: by path, then first seen first.

    Runs of RUN_BYTES are sorted in memory; when there are more, they are written to `folder`
    and merged, at most MERGE_FILES at a time.
    """
    runs: list[Path] = []
    run: list[bytes] = []
    held = number = 0
    with path.open("rb") as stream:
        for keys in _line_chunks(stream, _SORT_KEY):
            run += map(b"%s\0%012d\n".__mod__, zip(keys, itertools.count(number)))
            number += len(keys)
            held += sum(map(len, keys)) + 80 * len(keys)  # with the objects and list slots
            if held >= RUN_BYTES:
                run.sort()
                runs.append(folder / f"run{len(runs)}")
                with disk_full_names(runs[-1]), runs[-1].open("wb") as out:
                    out.writelines(run)
                run, held = [], 0
    run.sort()
    if not runs:
        yield from run
        return
    names = itertools.count(len(runs))
    while len(runs) >= MERGE_FILES:  # merge the oldest runs into one until few are left
        group, runs = runs[:MERGE_FILES], runs[MERGE_FILES:]
        merged = folder / f"run{next(names)}"
        with disk_full_names(merged), contextlib.ExitStack() as stack, merged.open("wb") as out:
            files = [stack.enter_context(r.open("rb", buffering=MERGE_BUFFER)) for r in group]
            out.writelines(heapq.merge(*files))
        for done in group:
            done.unlink()
        runs.append(merged)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(r.open("rb", buffering=MERGE_BUFFER)) for r in runs]
        yield from heapq.merge(run, *files)


_BITS = bytes.maketrans(b"01", b"\0\1")


def _normalized_blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """The kept lines of `path` (see normalize) as blocks of text, with their line counts.

    The lines are sorted by path (on disk, in bounded runs): a line's covering lines and its
    duplicates then come right before it. The kept lines are marked in a bitmap of one bit a
    line, and a second read writes them in their order.
    """
    kept = bytearray()
    with tempfile.TemporaryDirectory() as folder:
        duplicate = under = b"\xff"  # the last kept path, and the paths under it
        for record in _sorted_records(path, Path(folder)):
            if record.startswith(duplicate) or record.startswith(under):
                continue
            key = record[:-14]
            duplicate, under = key + b"\0", key + b"\x01"
            number = int(record[-13:-1])
            if len(kept) <= number >> 3:
                kept.extend(bytes((number >> 3) + 1 - len(kept)))
            kept[number >> 3] |= 1 << (number & 7)
    first = 0
    with path.open("rb") as stream:
        for lines in _line_chunks(stream):
            count = len(lines)
            bits = int.from_bytes(kept[first >> 3 : ((first + count) >> 3) + 1], "little")
            bits = bits >> (first & 7) & ((1 << count) - 1)
            first += count
            if bits != (1 << count) - 1:
                if not bits:
                    continue
                chosen = format(bits, "b").zfill(count)[::-1].encode().translate(_BITS)
                lines = list(itertools.compress(lines, chosen))
            yield b"\n".join(lines) + b"\n", len(lines)


def normalize(path: Path) -> Iterator[str]:
    """Paths of `path` without duplicates or lines a broader line covers, in first-seen order.

    `path` must be valid (see validate_file); memory stays bounded whatever its size.
    """
    for block, _ in _normalized_blocks(path):
        yield from block.decode("ascii").split("\n")[:-1]


def _write_normalized(path: Path, out: BinaryIO) -> int:
    count = 0
    for block, lines in _normalized_blocks(path):
        out.write(block)
        count += lines
    return count
