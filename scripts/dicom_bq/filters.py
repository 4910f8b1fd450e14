"""Export filter files: `/studies/UID[/series/UID[/instances/UID]]`, one a line.

Validation reads big chunks and counts valid lines with one compiled pattern, so a file of
valid lines is checked at close to `grep -c` speed; only a chunk with a bad or suspect line is
read again line by line to say which and why. Normalizing keeps the first line of each path,
drops lines a broader line covers, and holds only digests of instance lines in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

CHUNK = 8 * 1024 * 1024
PARALLEL_FROM = 64 * 1024 * 1024
MAX_REPORTED = 20
MAX_UID = 64
# In a valid file, deleting digits and dots leaves only these line shapes.
SHAPES = tuple(
    prefix + ending
    for prefix in (b"/studies//series//instances/", b"/studies//series/", b"/studies/")
    for ending in (b"\n", b"\r\n")
)
_DIGITS_AND_DOTS = b"0123456789."
# Substring searches run in C where a regex would try every position. In this mapping '/' and
# '.' are '#', line ends 'N', '0' stays and other digits are 'a': an empty UID, a trailing slash
# or a misplaced dot is "##" or "#N"; a component with a leading zero is "#00" or "#0a".
_SEPARATORS = bytes.maketrans(
    bytes(range(256)),
    bytes(
        ord("#")
        if c in b"/."
        else ord("N")
        if c in b"\r\n"
        else ord("a")
        if c in b"123456789"
        else c
        if c == ord("0")
        else ord("z")
        for c in range(256)
    ),
)
_UID_CHARS = bytes.maketrans(_DIGITS_AND_DOTS, b"x" * len(_DIGITS_AND_DOTS))
_LONG_UID = b"x" * (MAX_UID + 1)
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


def _uid_problems(uid: str, level: str) -> tuple[str | None, list[str]]:
    """(error, warnings) for one UID."""
    if not uid:
        return f"the {level} UID is empty", []
    if not all(ch.isdigit() or ch == "." for ch in uid) or not uid.isascii():
        return f"the {level} UID {uid[:70]!r} has characters other than digits and dots", []
    components = uid.split(".")
    if any(not c for c in components):
        return (
            f"the {level} UID {uid[:70]!r} has an empty component (a stray dot)",
            [],
        )
    warnings = []
    if any(len(c) > 1 and c.startswith("0") for c in components):
        warnings.append(
            f"the {level} UID {uid[:70]!r} has a component with a leading zero (DICOM PS3.5 9.1)"
        )
    if len(uid) > MAX_UID:
        warnings.append(f"the {level} UID is {len(uid)} characters long; DICOM allows {MAX_UID}")
    return None, warnings


def check_line(raw: bytes) -> tuple[str | None, list[str]]:
    """(error, warnings) for one line without its line ending."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "the line starts with a byte order mark: save the file as UTF-8 without BOM", []
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError:
        return "the line has non-ASCII bytes", []
    if not line:
        return "the line is empty", []
    if "\r" in line:
        return "a carriage return without a line feed: end lines with \\n or \\r\\n", []
    if line != line.strip() or any(ch.isspace() for ch in line):
        return "the line has spaces or tabs", []
    if not line.startswith("/studies/"):
        return "the line must start with /studies/", []
    parts = line[1:].split("/")
    if line.endswith("/") and len(parts) % 2:
        return "the line ends with '/': remove it", []
    if len(parts) % 2:
        return f"'{parts[-1]}' has no UID after it", []
    if len(parts) > 6:
        return "an instance is the deepest level: nothing may follow /instances/UID", []
    warnings: list[str] = []
    for depth in range(0, len(parts), 2):
        level, uid = parts[depth], parts[depth + 1]
        if level != LEVELS[depth // 2]:
            return f"expected '{LEVELS[depth // 2]}' where the line has '{level}'", []
        error, found = _uid_problems(uid, LEVEL_NAMES[depth // 2])
        if error:
            return error, []
        warnings += found
    return None, warnings


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """Chunks of whole lines; the last one may lack its final newline."""
    rest = b""
    while True:
        block = stream.read(CHUNK)
        if not block:
            if rest:
                yield rest
            return
        block = rest + block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        yield block[: cut + 1]
        rest = block[cut + 1 :]


def validate_stream(stream: BinaryIO, name: str, strict: bool = False) -> FilterReport:
    report = FilterReport(name)
    for chunk in _chunks(stream):
        _validate_chunk(chunk, report, strict)
    return report


def _validate_chunk(chunk: bytes, report: FilterReport, strict: bool) -> None:
    lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    crlf = _valid_crlf_lines(chunk if chunk.endswith(b"\n") else chunk + b"\n")
    if crlf is None:
        crlf = chunk.count(b"\r\n")
        _slow(chunk, report, strict)
    report.crlf_lines += crlf
    report.lines += lines


def _valid_crlf_lines(chunk: bytes) -> int | None:
    """How many lines end in CRLF when every line is valid and unremarkable, else None."""
    shape = chunk.translate(None, _DIGITS_AND_DOTS)
    # The shapes cannot overlap (each starts at "/studies/" and ends at its first newline), so
    # when their occurrences add up to the whole text, the text is nothing but valid lines.
    counts = [shape.count(s) for s in SHAPES]
    if sum(n * len(s) for n, s in zip(counts, SHAPES, strict=True)) != len(shape):
        return None
    separators = chunk.translate(_SEPARATORS)
    if any(bad in separators for bad in (b"##", b"#N", b"#00", b"#0a")):
        return None
    if _LONG_UID in chunk.translate(_UID_CHARS):
        return None
    return sum(n for n, s in zip(counts, SHAPES, strict=True) if s.endswith(b"\r\n"))


def _slow(chunk: bytes, report: FilterReport, strict: bool) -> None:
    pieces = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        pieces.pop()
    for offset, raw in enumerate(pieces):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        error, warnings = check_line(line)
        number = report.lines + offset + 1
        text = line[:120].decode("ascii", "replace")
        if error:
            report.add(LineProblem(number, error, text), strict, warning=False)
        for warning in warnings:
            report.add(LineProblem(number, warning, text), strict, warning=True)


def _ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges of about equal size, each starting at a line start."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as stream:
        for index in range(1, parts):
            stream.seek(size * index // parts)
            stream.readline()
            bounds.append(max(stream.tell(), bounds[-1]))
    bounds.append(size)
    return [(start, end) for start, end in itertools.pairwise(bounds) if end > start]


def _validate_range(path: Path, start: int, end: int, strict: bool) -> FilterReport:
    report = FilterReport(str(path))
    with path.open("rb") as stream:
        stream.seek(start)
        remaining = end - start
        rest = b""
        while remaining > 0:
            block = rest + stream.read(min(CHUNK, remaining))
            remaining = end - stream.tell()
            cut = block.rfind(b"\n") + 1 if remaining > 0 else len(block)
            if cut:
                _validate_chunk(block[:cut], report, strict)
            rest = block[cut:]
        if rest:
            _validate_chunk(rest, report, strict)
    return report


def validate_file(path: Path, strict: bool = False, workers: int | None = None) -> FilterReport:
    """Validate a file; big files are split by line between processes, one a core."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or path.stat().st_size < PARALLEL_FROM:
        return _validate_range(path, 0, path.stat().st_size, strict)
    from concurrent.futures import ProcessPoolExecutor

    ranges = _ranges(path, workers)
    with ProcessPoolExecutor(len(ranges)) as pool:
        parts = list(
            pool.map(_validate_range, *zip(*[(path, a, b, strict) for a, b in ranges], strict=True))
        )
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
    return report


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


def lines_from_csv(stream: TextIO) -> Iterator[str]:
    """Paths from a CSV with StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID columns."""
    import csv

    reader = csv.DictReader(stream)
    columns = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    if reader.fieldnames is None or columns[0] not in reader.fieldnames:
        raise BuildError(
            f"the CSV needs a header with {', '.join(columns)} (series and instance may be empty)"
        )
    for number, row in enumerate(reader, start=2):
        study, series, instance = ((row.get(c) or "").strip() for c in columns)
        if not study:
            raise BuildError(f"CSV line {number}: StudyInstanceUID is empty")
        if instance and not series:
            raise BuildError(f"CSV line {number}: an SOPInstanceUID needs its SeriesInstanceUID")
        line = path_line(study, series or None, instance or None)
        error, _ = check_line(line.encode())
        if error:
            raise BuildError(f"CSV line {number}: {error}")
        yield line


def build_from_spill(spill: Path, path: Path, normalized: bool, source: str) -> int:
    """Lines spilled from stdin or a query: validated in bulk, then written (normalized)."""
    import shutil

    report = validate_file(spill)
    if not report.ok:
        first = report.errors[0]
        raise BuildError(
            f"{source} line {first.line}: {first.reason}: {first.text!r} "
            f"({report.error_count} bad lines in all)"
        )
    if normalized:
        return write_lines(normalize(spill), path)
    shutil.copyfile(spill, path)
    return report.lines


def _split(line: bytes) -> tuple[bytes, bytes | None, bytes | None]:
    parts = line.split(b"/")
    # b"", b"studies", study, b"series", series, b"instances", instance
    return parts[2], parts[4] if len(parts) > 4 else None, parts[6] if len(parts) > 6 else None


def normalize(path: Path) -> Iterator[str]:
    """Paths of `path` without duplicates or lines a broader line covers, in first-seen order.

    Two passes: the first collects study and series lines (the covering ones), the second
    writes. Instance lines are remembered by a 128-bit digest, not kept whole.
    """
    studies: set[bytes] = set()
    series: set[tuple[bytes, bytes]] = set()
    with path.open("rb") as stream:
        for raw in stream:
            if b"/instances/" in raw:
                continue
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            study, serie, _ = _split(line)
            if serie is None:
                studies.add(study)
            else:
                series.add((study, serie))
    covering = bool(studies or series)
    written: set[bytes] = set()
    digest = hashlib.blake2b
    with path.open("rb") as stream:
        for raw in stream:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            if b"/instances/" in line:
                if covering:
                    study, serie, _ = _split(line)
                    if study in studies or (study, serie) in series:
                        continue
                key = digest(line, digest_size=16).digest()
            else:
                study, serie, _ = _split(line)
                if serie is not None and study in studies:
                    continue
                key = line  # few, and kept whole
            if key in written:
                continue
            written.add(key)
            yield line.decode("ascii")


def write_lines(lines: Iterable[str], path: Path) -> int:
    count = 0
    with path.open("w", encoding="ascii", newline="\n") as out:
        for line in lines:
            out.write(line + "\n")
            count += 1
    return count


def build_file(lines: Iterable[str], path: Path, normalized: bool) -> int:
    """Write `lines` to `path`, normalized through a spill file when asked; returns the count."""
    if not normalized:
        return write_lines(lines, path)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        spill = Path(folder) / "lines.txt"
        write_lines(lines, spill)
        return write_lines(normalize(spill), path)
