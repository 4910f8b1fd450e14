"""A stack's config as Pulumi's engine merges it, offline: Pulumi.yaml, then Pulumi.<stack>.yaml.

Every rule here is the engine's (pulumi/pulumi v3.274.0), and tests/engine/test_config_engine.py
checks this reading against the real engine on a corpus of stack files:

- Reading (`sdk/go/common/workspace/loaders.go`, LoadProjectStackBytes; `encoding/marshal.go`):
  files (UTF-8, or UTF-16 after a byte order mark) are read with gopkg.in/yaml.v3, a YAML
  1.2-style resolver: `true`/`True`/`TRUE` are booleans but `yes`/`on` are text, `0x1F` and
  `017` are integers, `1e3` a float, `~` and an empty value are null, a date is a timestamp; a
  key written twice in any map of the file is an error ("mapping key ... already defined").
  The file must be a map of text keys ("expected only string keys"). It is then written back out
  as YAML and read again into the stack's config map (`resource/config/object.go`,
  unmarshalObject and MarshalString): a scalar becomes its text (a float as Go's JSON writes
  it, a timestamp as Go's time.Time.String()), a list or a map becomes a JSON object value
  (a map key that is not text named as Go's %v names it), `{secure: ...}` a secret.
- Keys (`stackConfigNamespacedWithProject`, `config/key.go` ParseKey): a stack key without a
  namespace belongs to the project (`sourceProject` is `dicom-bq:sourceProject`);
  `ns:config:name` is the old spelling of `ns:name`; anything else with two colons is refused.
- Null (`checkForEmptyConfig`): `key:` / `key: null` / `key: ~` is warned about and read as "".
- Merge (`pkg/workspace/config.go`, mergeConfig and validateStackConfigValue): a project key
  with neither `default` nor `value`, absent from the stack, stops the run with "Stack 'dev' is
  missing configuration values 'a' and 'b'"; otherwise the project's default or value fills in
  (a text, integer or boolean as its text, anything else as JSON). Then every typed key, in
  sorted order, is checked: a JSON object value is decoded first, so `[2024]` is an array whose
  item is a number, not a string ("Stack 'dev' with configuration key 'k' must be of type 't'").
- Pulumi.yaml (`project.go`, Project.Validate, RewriteShorthandConfigValues): a key without a
  namespace belongs to the project; a scalar or list instead of a map is shorthand for `default`
  (`value` in another namespace); `default` and `value` together are refused; a default must be
  of its declared type.
- Secrets: the engine decrypts every `secure:` value. Offline we can for the passphrase
  provider (`encryptionsalt:` in the file, PULUMI_CONFIG_PASSPHRASE or _FILE set: PBKDF2-SHA256
  and AES-256-GCM, `resource/config/crypt.go`); without a salt, a DIY backend's engine mints a
  new one, which decrypts nothing; other providers (and Pulumi Cloud's) need the CLI.
- Not modelled: a key written with and without its namespace (the engine keeps one at random:
  a note says which this reading keeps), ESC environments (above), Pulumi.yaml's JSON schema.
- `environment:` imports Pulumi ESC environments: only the CLI, logged in, can open them. Offline
  we say what could not be resolved; with a `pulumi` CLI on PATH we ask it (Automation API
  `Stack.get_all_config`, which runs `pulumi config --json`).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import contextlib
import copy
import decimal
import functools
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from dicom_bq import files
from dicom_bq.errors import DicomBqError
from dicom_bq.texts import excerpt, output_excerpt

PROJECT_NAME = "dicom-bq"
# Pulumi stack references: [ORG/[PROJECT/]]NAME, each part letters, digits, '-', '_', '.'
# (pulumi/pulumi sdk/go/common/tokens, ValidateStackName), never "." or ".." alone.
_STACK_PART = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# Pulumi config files are small; these bound what a hostile or broken file can cost us.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_ALIASES = 100
# strconv.Atoi: optional sign, decimal digits (no underscores), within int64.
_ATOI = re.compile(r"[+-]?[0-9]+")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
# The engine's warning for a null value (sdk/go/common/workspace/loaders.go, checkForEmptyConfig).
_NULL_WARNING = (
    "No value for configuration key{s} {keys}. This is currently treated as an empty string "
    '`""`, but will be treated as `null` in a future version of pulumi. '
    'Set the value{s} to `""` to avoid this warning.'
)  # (the engine breaks the line before "Set"; a note is one line)
PASSPHRASE_ITERATIONS = 1_000_000  # config.NewSymmetricCrypterFromPassphrase


@dataclass(frozen=True)
class StackConfig:
    """A stack's merged config: namespaced keys, values as the engine hands them to a program
    (text; a JSON object value decoded: lists and maps)."""

    stack: str
    values: dict[str, Any]
    environments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved_by_cli: bool = False

    def own(self) -> dict[str, Any]:
        """This project's keys, without the namespace."""
        prefix = f"{PROJECT_NAME}:"
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest folder upwards holding this project's Pulumi.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise DicomBqError(
        f"no Pulumi.yaml in {here} or above it: run dicom-bq from the dicom-bq project folder, "
        "or pass --project-dir PATH"
    )


def _read_text(path: Path) -> str:
    """The text of a Pulumi config file: a regular file of at most MAX_CONFIG_BYTES (a FIFO or a
    device is refused before any read, files.read_bounded), UTF-8 or UTF-16 after a BOM."""
    if not path.exists() and not path.is_symlink():
        raise DicomBqError(f"{path} does not exist")
    data = files.read_bounded(path, limit=MAX_CONFIG_BYTES, what=path.name)
    # readFileStripUTF8BOM, then yaml.v3's reader: UTF-8, or UTF-16 after its byte order mark.
    encoding = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}.get(data[:2], "utf-8-sig")
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise DicomBqError(
            f"{path.name} is not UTF-8 text (Pulumi reads YAML as UTF-8, or UTF-16 after a byte "
            "order mark): re-save it as UTF-8"
        ) from None


# --------------------------------------------------------------------------------------------
# gopkg.in/yaml.v3 v3.0.1, as the engine decodes a file into `any` (decode.go, resolve.go)


class _YamlV3Error(Exception):
    """What yaml.v3's Unmarshal returns: `yaml: unmarshal errors:` (a TypeError, returned as is
    by the engine) or another `yaml: ...` failure (wrapped in "invalid YAML file: ")."""

    def __init__(self, message: str, type_error: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.type_error = type_error


@dataclass(frozen=True)
class _Timestamp:
    """A YAML timestamp (yaml.v3 decodes an unquoted date into a time.Time)."""

    go_string: str  # time.Time.String(): what a stack value becomes after the engine's re-read
    rfc3339: str  # time.RFC3339Nano: what json.Marshal writes


@dataclass(frozen=True)
class _AnyKeyMap:
    """A YAML mapping with a key that is not text (a Go map[any]any)."""

    pairs: tuple[tuple[Any, Any], ...]


class _Untagged(BaseResolver):
    """Leave every untagged node untagged: resolution is yaml.v3's, done while decoding."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        return ""


class _V3Composer(Reader, Scanner, Parser, Composer, _Untagged):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Untagged.__init__(self)


_LONG_TAG = "tag:yaml.org,2002:"
_RESOLVABLE = {"", "!!str", "!!bool", "!!int", "!!float", "!!null", "!!timestamp"}
_RESOLVE_MAP: dict[str, tuple[str, Any]] = {
    **{s: ("!!bool", True) for s in ("true", "True", "TRUE")},
    **{s: ("!!bool", False) for s in ("false", "False", "FALSE")},
    **{s: ("!!null", None) for s in ("", "~", "null", "Null", "NULL")},
    **{s: ("!!float", math.nan) for s in (".nan", ".NaN", ".NAN")},
    **{s: ("!!float", math.inf) for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: ("!!float", -math.inf) for s in ("-.inf", "-.Inf", "-.INF")},
    "<<": ("!!merge", "<<"),
}
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9_]+([eE][-+]?[0-9_]+)?")
_TIMESTAMPS = (
    # allowedTimestampFormats: "2006-1-2T15:4:5.999999999Z07:00" (T or t),
    # "2006-1-2 15:4:5.999999999", "2006-1-2"; Go's time.Parse takes one or two digits for each
    # field but the year, a comma or a period before the fraction, and a run of spaces for the
    # layout's space. Digits are ASCII ones (re.ASCII: no other script's digit is a \d).
    re.compile(
        r"(\d{4})-(\d{1,2})-(\d{1,2})[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?"
        r"(Z|[+-]\d{2}:\d{2})",
        re.ASCII,
    ),
    re.compile(
        r"(\d{4})-(\d{1,2})-(\d{1,2}) +(\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?()", re.ASCII
    ),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})()()()()()", re.ASCII),
)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_LONG_TAG) :] if tag.startswith(_LONG_TAG) else tag


def _go_parse_int(text: str, signed: bool) -> int | None:
    """strconv.ParseInt(text, 0, 64) (signed) or ParseUint(text, 0, 64)."""
    body = text
    negative = False
    if signed and body[:1] in ("+", "-"):
        negative, body = body[0] == "-", body[1:]
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        base, digits = {"0x": 16, "0o": 8, "0b": 2}[prefix], body[2:]
    elif body.startswith("0") and len(body) > 1:
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    value = -int(digits, base) if negative else int(digits, base)
    low, high = _INT64 if signed else (0, _UINT64_MAX)
    return value if low <= value <= high else None


def _go_parse_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64) on a decimal literal; out of range is an error."""
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isinf(value) else value


def _go_timestamp(text: str) -> _Timestamp | None:
    """parseTimestamp, then time.Time.String() (the engine's machine runs in UTC)."""
    for pattern in _TIMESTAMPS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        year, month, day = (int(match.group(i)) for i in (1, 2, 3))
        hour, minute, second = (int(match.group(i) or 0) for i in (4, 5, 6))
        fraction, zone = match.group(7) or "", match.group(8) or ""
        if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
            return None
        if hour > 23 or minute > 59 or second > 59:
            return None
        offset = 0
        if zone not in ("", "Z"):
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 24 or minutes > 60:  # time.Parse: "+05:60" is +06:00
                return None
            offset = (hours * 60 + minutes) * (-1 if zone[0] == "-" else 1)
        nanos = int((fraction + "000000000")[:9])
        digits = f"{nanos:09d}".rstrip("0")
        fraction_text = f".{digits}" if digits else ""
        zone_text = (
            "+0000 UTC"
            if offset == 0
            else f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
        )
        if offset:
            zone_text = f"{zone_text} {zone_text}"  # time.FixedZone("", offset) prints twice
        clock = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        rfc_zone = "Z" if offset == 0 else f"{zone_text[:3]}:{zone_text[3:5]}"
        return _Timestamp(
            f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
            f"{fraction_text} {zone_text}",
            f"{clock}{fraction_text}{rfc_zone}",
        )
    return None


def _v3_resolve(tag: str, text: str) -> tuple[str, Any]:
    """resolve.go, resolve(): the tag and the Go value of a plain (or explicitly tagged) scalar."""
    if tag not in _RESOLVABLE:
        return tag, text
    rtag, out = _resolve_plain(tag, text)
    if tag in ("", rtag, "!!str"):
        return rtag, out
    if tag == "!!float" and rtag == "!!int":
        return "!!float", float(out)
    raise _YamlV3Error(f"yaml: cannot decode {rtag} `{text}` as a {tag}")


def _resolve_plain(tag: str, text: str) -> tuple[str, Any]:
    if tag == "!!str" or not text:
        return ("!!str", text) if tag == "!!str" else _RESOLVE_MAP[""]
    first = text[0]
    if first in "yYnNtTfFoO~":
        return _RESOLVE_MAP.get(text, ("!!str", text))
    if first == ".":
        if text in _RESOLVE_MAP:
            return _RESOLVE_MAP[text]
        value = _go_parse_float(text) if _DOT_FLOAT.fullmatch(text) else None
        return ("!!float", value) if value is not None else ("!!str", text)
    if first not in "+-0123456789":
        return "!!str", text  # no hint: text
    if text in _RESOLVE_MAP:
        return _RESOLVE_MAP[text]
    if tag in ("", "!!timestamp"):
        stamp = _go_timestamp(text)
        if stamp is not None:
            return "!!timestamp", stamp
    plain = text.replace("_", "")
    for signed in (True, False):
        number = _go_parse_int(plain, signed)
        if number is not None:
            return "!!int", number
    if _YAML_FLOAT.fullmatch(plain):
        value = _go_parse_float(plain)
        if value is not None:
            return "!!float", value
    # (resolve.go's later 0b/0o branches only retry what ParseInt already refused.)
    return "!!str", text


# strconv.Quote's escapes; any other character Go does not print is written \xHH below 0x80,
# else \uHHHH, or \UHHHHHHHH beyond the Basic Multilingual Plane.
_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """Go's %#v of a string (strconv.Quote)."""
    out = []
    for char in text:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code >> 16:
            out.append(f"\\U{code:08x}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


class _V3Decoder:
    """decoder.unmarshal into `any`: Go values as Python ones, errors collected as yaml.v3 does."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def decode(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            return [self.decode(item) for item in node.value]
        if isinstance(node, MappingNode):
            return self.mapping(node)
        raise _YamlV3Error(f"yaml: unexpected node {node!r}")  # pragma: no cover

    def scalar(self, node: ScalarNode) -> Any:
        tag = _short_tag(str(node.tag))
        if tag in ("", "!") and node.style in ("'", '"', "|", ">"):
            return str(node.value)  # indicatedString
        if tag == "!!binary":
            try:
                return _go_base64(str(node.value)).decode("utf-8", "replace")
            except ValueError:
                raise _YamlV3Error("yaml: !!binary value contains invalid base64 data") from None
        return _v3_resolve(tag, str(node.value))[1]

    def key_text(self, node: Node) -> str:
        return str(node.value) if isinstance(node, ScalarNode) else ""

    def mapping(self, node: MappingNode) -> Any:
        pairs: list[tuple[Node, Node]] = list(node.value)
        before = len(self.errors)
        for i, (first, _) in enumerate(pairs):
            for second, _ in pairs[i + 1 :]:
                if type(first) is type(second) and self.key_text(first) == self.key_text(second):
                    self.errors.append(
                        f"line {second.start_mark.line + 1}: mapping key "
                        f"{_go_quote(self.key_text(first))} already defined at line "
                        f"{first.start_mark.line + 1}"
                    )
        if len(self.errors) > before:
            return {}
        entries: dict[Any, Any] = {}
        keys: list[Any] = []
        merge: Node | None = None
        for key_node, value_node in pairs:
            if (
                isinstance(key_node, ScalarNode)
                and key_node.value == "<<"
                and _short_tag(str(key_node.tag)) in ("", "!", "!!merge")
            ):
                merge = value_node
                continue
            key = self.decode(key_node)
            if isinstance(key, (list, dict, _AnyKeyMap)):
                raise _YamlV3Error(f"yaml: invalid map key: {key!r}")
            value = self.decode(value_node)
            marker = (type(key).__name__, key)
            if marker not in entries:
                keys.append(key)
            entries[marker] = value
        if merge is not None:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise _YamlV3Error(
                        "yaml: map merge requires map or sequence of maps as the value"
                    )
                merged = self.mapping(source)
                items = merged.pairs if isinstance(merged, _AnyKeyMap) else merged.items()
                for key, value in items:
                    marker = (type(key).__name__, key)
                    if marker not in entries:
                        keys.append(key)
                        entries[marker] = value
        if all(isinstance(key, str) for key in keys):
            return {key: entries[("str", key)] for key in keys}
        return _AnyKeyMap(tuple((key, entries[(type(key).__name__, key)]) for key in keys))


def _read_yaml_v3(text: str, file_name: str) -> Any:
    """The first document of a file as yaml.v3 decodes it into `any`, or DicomBqError. A command
    reads Pulumi.yaml several times and decoding costs tens of milliseconds: the same text is
    decoded once (a copy each time, so no caller sees another's changes)."""
    return copy.deepcopy(_decoded_yaml_v3(text, file_name))


@functools.lru_cache(maxsize=32)
def _decoded_yaml_v3(text: str, file_name: str) -> Any:
    # Bounded nesting before the composer, which recurses once a level (RecursionError).
    try:
        _, aliases = files.yaml_shape(text, what=file_name)
    except yaml.YAMLError:
        aliases = 0  # reported below, with the line
    if aliases > MAX_YAML_ALIASES:
        raise DicomBqError(
            f"{file_name} uses {aliases} YAML aliases; a config file needs none: write the "
            "values out"
        )
    loader = _V3Composer(text)
    try:
        node = loader.get_node() if loader.check_node() else None
        decoder = _V3Decoder()
        document = decoder.decode(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DicomBqError(
            f"{file_name} is not valid YAML{where}: {getattr(error, 'problem', None) or 'syntax'}"
            "; fix the file (or regenerate it with `pulumi config set`)"
        ) from None
    except _YamlV3Error as error:
        raise DicomBqError(
            f"{file_name}: invalid YAML file: {error.message} (Pulumi reads it the same way)"
        ) from None
    finally:
        loader.dispose()
    if decoder.errors:
        raise DicomBqError(
            f"{file_name}: yaml: unmarshal errors:\n  "
            + "\n  ".join(decoder.errors)
            + "\n(Pulumi refuses a key written twice in one map: keep one of them)"
        )
    return document


def _go_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "uint64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, _AnyKeyMap):
        return "map[interface {}]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, _Timestamp):
        return "time.Time"
    return "<nil>"


def _go_percent_s(value: Any) -> str:
    """fmt's %s of a value that is not a string."""
    if isinstance(value, _Timestamp):
        return value.go_string
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, float):
        shown = _go_format_g(value)
    else:
        shown = str(value)
    return f"%!s({_go_type_name(value)}={shown})"


def _simplify(value: Any) -> Any:
    """SimplifyMarshalledValue: a map[any]any must have only text keys. Like the engine, it
    looks inside such maps and lists only: a map of text keys is taken as it is, so a number
    key deeper down passes (and becomes text when the value is read again, `_reread`)."""
    if isinstance(value, _AnyKeyMap):
        for key, _ in value.pairs:
            if not isinstance(key, str):
                raise DicomBqError(f"expected only string keys, got '{_go_percent_s(key)}'")
        return {key: _simplify(item) for key, item in value.pairs}
    if isinstance(value, list):
        return [_simplify(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------
# Go's number and JSON texts (strconv.FormatFloat, encoding/json)


def _go_format_g(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 64), as yaml.v3 writes a float back out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + _fixed(digits, exponent)


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-trip digits of |value| and its decimal exponent (d.ddd x 10^exp)."""
    sign_digits_exponent = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in sign_digits_exponent.digits)
    exponent = int(sign_digits_exponent.exponent) + len(digits) - 1
    return digits, exponent


def _fixed(digits: str, exponent: int) -> str:
    if exponent < 0:
        return "0." + "0" * (-exponent - 1) + digits
    if len(digits) <= exponent + 1:
        return digits + "0" * (exponent + 1 - len(digits))
    return digits[: exponent + 1] + "." + digits[exponent + 1 :]


def _go_json_float(value: float) -> str:
    """encoding/json's float64: 'f' unless < 1e-6 or >= 1e21, then 'e' without e-0X."""
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}".replace(
            "e-0", "e-"
        )
    return sign + _fixed(digits, exponent)


class _UnsupportedValueError(Exception):
    """json.Marshal's UnsupportedValueError (a MarshalerError for each config.object around it)."""

    def __init__(self, shown: str, depth: int = 0) -> None:
        super().__init__(shown)
        self.shown = shown
        self.depth = depth


def _go_json(value: Any, objects: bool = False) -> str:
    """json.Marshal of a Go value (keys sorted, HTML characters escaped). `objects`: the value
    is a config object, whose numbers went through json.Number (Int64, else Float64) and whose
    every level is a json.Marshaler."""
    try:
        return _go_json_inner(value, objects)
    except _UnsupportedValueError as error:
        wrap = "json: error calling MarshalJSON for type config.object: " * error.depth
        raise _UnsupportedValueError(f"{wrap}json: unsupported value: {error.shown}") from None


def _go_json_inner(value: Any, objects: bool, depth: int = 0) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if objects and not _INT64[0] <= value <= _INT64[1]:
            return _go_json_float(float(value))
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _UnsupportedValueError(_go_format_g(value), depth if objects else 0)
        return _go_json_float(value)
    if isinstance(value, _Timestamp):
        return _go_json_inner(value.rfc3339, objects)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escaped)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, list):
        return "[" + ",".join(_go_json_inner(item, objects, depth + 1) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: item[0].encode("utf-8"))
        return (
            "{"
            + ",".join(
                f"{_go_json_inner(k, objects)}:{_go_json_inner(v, objects, depth + 1)}"
                for k, v in items
            )
            + "}"
        )
    raise _UnsupportedValueError(repr(value))  # pragma: no cover


def _yaml_text(value: Any) -> str:
    """A scalar's text as yaml.v3 writes it (the value of its node)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(
            _go_format_g(value), _go_format_g(value)
        )
    if isinstance(value, _Timestamp):
        return value.rfc3339
    return str(value)


def _go_percent_v(value: Any) -> str:
    """fmt's %v of a key read back from YAML (unmarshalObject names map[any]any keys so)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_format_g(value)
    if isinstance(value, _Timestamp):
        return value.go_string
    return str(value)


def _reread(value: Any, keep_timestamps: bool = False) -> Any:
    """A value after the engine writes the stack back out as YAML and reads it again: a float
    is written with %g (so 1.0 comes back as the integer 1), a timestamp comes back as text (as
    a config value; `keep_timestamps`: as a project's default), a map key that is not text is
    named with %v."""
    if isinstance(value, float) and not (math.isnan(value) or math.isinf(value)):
        return _v3_resolve("", _go_format_g(value))[1]
    if isinstance(value, _Timestamp):
        return value if keep_timestamps else value.go_string
    if isinstance(value, list):
        return [_reread(item, keep_timestamps) for item in value]
    if isinstance(value, dict):
        return {key: _reread(item, keep_timestamps) for key, item in value.items()}
    if isinstance(value, _AnyKeyMap):
        texts = [_yaml_text(key) for key, _ in value.pairs]
        for i, text in enumerate(texts):
            if text in texts[:i]:
                raise _YamlV3Error(
                    "could not unmarshal map: yaml: unmarshal errors:\n  mapping key "
                    f"{_go_quote(text)} already defined (two keys of a map are written the "
                    "same once read as text)",
                    type_error=True,
                )
        return {
            key if isinstance(key, str) else _go_percent_v(_v3_resolve("", _yaml_text(key))[1]): (
                _reread(item)
            )
            for key, item in value.pairs
        }
    return value


# --------------------------------------------------------------------------------------------
# Config values as the engine holds them (resource/config/value.go, object.go)


@dataclass(frozen=True)
class _Secret:
    ciphertext: str


@dataclass
class _Value:
    """config.Value: text (JSON when `is_object`), whether it is a secret."""

    raw: Any  # the re-read Go value, secrets as _Secret
    text: str = ""
    is_object: bool = False
    secure: bool = False


def _is_secure_map(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str)


def _objects(value: Any) -> Any:
    """unmarshalObject: a {secure: TEXT} map anywhere is a secret."""
    if _is_secure_map(value):
        return _Secret(value["secure"])
    if isinstance(value, dict):
        return {key: _objects(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_objects(item) for item in value]
    return value


def _has_secret(value: Any) -> bool:
    if isinstance(value, _Secret):
        return True
    if isinstance(value, dict):
        return any(_has_secret(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_secret(item) for item in value)
    return False


def _plain(value: Any, reveal: Mapping[str, str]) -> Any:
    if isinstance(value, _Secret):
        return reveal[value.ciphertext]
    if isinstance(value, dict):
        return {key: _plain(item, reveal) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item, reveal) for item in value]
    return value


def _stack_value(value: Any, reveal: Mapping[str, str]) -> _Value:
    """MarshalString, then Decrypt: what the program receives for one key (`value` read again
    and its secrets marked, `_objects(_reread(...))`)."""
    if value is None:
        return _Value(None, "")
    if isinstance(value, _Secret):
        return _Value(value, reveal.get(value.ciphertext, ""), secure=True)
    if isinstance(value, bool):
        return _Value(value, "true" if value else "false")
    if isinstance(value, int):
        return _Value(value, str(value))
    if isinstance(value, float):
        return _Value(value, _go_json(value))
    if isinstance(value, str):
        return _Value(value, value)
    text = _go_json(_plain(value, reveal), objects=True)
    return _Value(value, text, is_object=True, secure=_has_secret(value))


def _project_value(raw: Any) -> _Value:
    """createConfigValue: a project default or value."""
    if isinstance(raw, bool):
        return _Value(raw, "true" if raw else "false")
    if isinstance(raw, str):
        return _Value(raw, raw)
    if isinstance(raw, int) and _INT64[0] <= raw <= _INT64[1]:
        return _Value(raw, str(raw))
    return _Value(raw, _go_json(raw, objects=True), is_object=True)


# --------------------------------------------------------------------------------------------
# Pulumi.yaml


def read_project(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "Pulumi.yaml"
    project = _read_yaml_v3(_read_text(path), path.name)
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        raise DicomBqError("Pulumi.yaml must be a map with at least `name:` and `runtime:`")
    if project["name"] != PROJECT_NAME:
        raise DicomBqError(
            f"Pulumi.yaml names project {project['name']!r}; dicom-bq reads the {PROJECT_NAME!r} "
            "project: pass --project-dir to its folder"
        )
    try:
        return dict(_simplify(project))
    except DicomBqError as error:
        raise DicomBqError(f"Pulumi.yaml: {error.message}") from None


def stack_config_dir(project_dir: Path) -> Path:
    return project_dir / str(read_project(project_dir).get("stackConfigDir", "."))


def available_stacks(project_dir: Path) -> list[str]:
    config_dir = stack_config_dir(project_dir)
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))


@dataclass(frozen=True)
class ConfigType:
    """A declared type: `string`, `integer`, `boolean`, `object`, or `array` with `items`."""

    name: str
    items: ConfigType | None = None

    @classmethod
    def of(cls, declaration: Mapping[str, Any]) -> ConfigType | None:
        name = declaration.get("type")
        if name is None:
            return None
        items = declaration.get("items")
        return cls(str(name), cls.of(items) if isinstance(items, dict) else None)

    def full_name(self) -> str:
        """InferFullTypeName."""
        return f"array<{self.items.full_name()}>" if self.items else self.name

    def accepts(self, value: Any) -> bool:
        """ValidateConfigValue, on a Go value (text, JSON-decoded or as YAML decoded it)."""
        if self.name == "string":
            return isinstance(value, str)
        if self.name == "integer":
            if isinstance(value, bool):
                return False
            if isinstance(value, int):
                return _INT64[0] <= value <= _INT64[1]
            if isinstance(value, float):
                return math.isfinite(value) and value == math.trunc(value)
            if isinstance(value, str):
                return bool(_ATOI.fullmatch(value)) and _INT64[0] <= int(value) <= _INT64[1]
            return False
        if self.name == "boolean":
            return value in ("true", "false") or isinstance(value, bool)
        if self.name == "object":
            return isinstance(value, dict)
        if not isinstance(value, list) or self.items is None:
            return False
        return all(self.items.accepts(item) for item in value)


@dataclass(frozen=True)
class DeclaredKey:
    key: str  # namespaced
    written: str  # as in Pulumi.yaml, for the engine's messages
    type: ConfigType | None
    default: Any = None
    value: Any = None
    secret: bool = False


def _parse_key(text: str) -> str | None:
    """config.ParseKey: `ns:name`, or `ns:config:name` (the old spelling), as `ns:name`."""
    parts = text.split(":")
    if len(parts) == 2:
        return text
    # tokens.ParseModuleMember only counts the colons: any namespace and name are kept.
    if len(parts) == 3 and parts[1] == "config":
        return f"{parts[0]}:{parts[2]}"
    return None


def _key_error(key: str) -> str:
    return (
        f"could not parse {key} as a configuration key (configuration keys should be of the "
        "form `<namespace>:<name>`)"
    )


def declared_keys(project: Mapping[str, Any]) -> list[DeclaredKey]:
    """Pulumi.yaml's `config:` block, checked as Project.Validate checks it."""
    name = str(project["name"])
    block = project.get("config") or {}
    if not isinstance(block, dict):
        raise DicomBqError("Pulumi.yaml: `config:` must be a map of key: declaration")
    keys = []
    for written, declaration in sorted(block.items()):
        namespaced = ":" in written and not written.startswith(f"{name}:")
        if not isinstance(declaration, dict):
            # RewriteShorthandConfigValues: a bare scalar or list is a default (a value elsewhere).
            declaration = {"value" if namespaced else "default": declaration}
        # LoadProjectBytes writes the project back out and reads it again: 1.0 becomes 1.
        default, value = (
            _reread(declaration.get("default"), keep_timestamps=True),
            _reread(declaration.get("value"), keep_timestamps=True),
        )
        if default is not None and value is not None:
            raise DicomBqError(
                f"Pulumi.yaml: project config '{written}' cannot have both a 'default' and "
                "'value' attribute"
            )
        kind = ConfigType.of(declaration)
        if namespaced and kind is not None:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is not namespaced by the project "
                "and should not define a type"
            )
        if namespaced and default is not None:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is not namespaced by the project "
                "and should not define a default value. Did you mean to use the 'value' "
                "attribute instead of 'default'?"
            )
        if namespaced and value is None:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is namespaced and must provide an "
                "attribute 'value'"
            )
        if kind is not None and kind.name == "array" and kind.items is None:
            raise DicomBqError(
                f"Pulumi.yaml: The configuration key '{written}' declares an array but does not "
                "specify the underlying type via the 'items' attribute"
            )
        if kind is not None and default is not None and not kind.accepts(default):
            raise DicomBqError(
                f"Pulumi.yaml: The default value specified for configuration key '{written}' is "
                f"not of the expected type '{kind.full_name()}'"
            )
        key = written if ":" in written else f"{name}:{written}"
        parsed = _parse_key(key)
        if parsed is None:
            raise DicomBqError(f"Pulumi.yaml: {_key_error(key)}")
        keys.append(
            DeclaredKey(parsed, written, kind, default, value, declaration.get("secret") is True)
        )
    return keys


def _enumerate(keys: list[str]) -> str:
    """formatMissingKeys: 'a', 'a' and 'b', 'a', 'b' and 'c'."""
    quoted = [f"'{key}'" for key in sorted(keys)]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _stack_file(project_dir: Path, stack: str) -> Path:
    parts = stack.split("/")
    short = parts[-1]
    if len(parts) > 3 or not all(
        _STACK_PART.fullmatch(part) and part not in (".", "..") for part in parts
    ):
        raise DicomBqError(
            f"stack name {excerpt(stack)} is not valid: use letters, digits, '-', '_' and '.' "
            "(optionally after ORG/PROJECT/)"
        )
    path = stack_config_dir(project_dir) / f"Pulumi.{short}.yaml"
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise DicomBqError(
            f"stack {short!r} has no config file {path.name} in {path.parent}: the stacks here are "
            f"{known}; create one with `pulumi stack init {short}` and `pulumi config set`"
        )
    return path


def _environments(document: Mapping[str, Any]) -> list[str]:
    environment = document.get("environment")
    if environment is None:
        return []
    if isinstance(environment, list):
        return [str(name) for name in environment]
    if isinstance(environment, dict):
        imports = environment.get("imports") or []
        return [str(name) for name in imports] or ["(inline environment)"]
    return [str(environment)]


# --------------------------------------------------------------------------------------------
# Secrets


def _passphrase() -> str | None:
    """readPassphrase: PULUMI_CONFIG_PASSPHRASE, else the file PULUMI_CONFIG_PASSPHRASE_FILE."""
    if "PULUMI_CONFIG_PASSPHRASE" in os.environ:
        return os.environ["PULUMI_CONFIG_PASSPHRASE"]
    name = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if name:
        try:
            return Path(name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise DicomBqError(f"unable to read PULUMI_CONFIG_PASSPHRASE_FILE: {error}") from None
    return None


_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _go_base64(text: str) -> bytes:
    """base64.StdEncoding.DecodeString, with Go's error ("illegal base64 data at input byte N",
    as `bad value: ...`)."""
    data = text.encode("utf-8", "surrogateescape")
    position = 0
    quantum: list[int] = []
    out = bytearray()

    def corrupt(at: int) -> ValueError:
        return ValueError(f"bad value: illegal base64 data at input byte {at}")

    while True:
        quantum = []
        while len(quantum) < 4:
            if position == len(data):
                if not quantum:
                    return bytes(out)
                raise corrupt(position - len(quantum))
            char = chr(data[position])
            position += 1
            if char in "\r\n":
                continue
            if char in _BASE64:
                quantum.append(_BASE64.index(char))
                continue
            if char != "=" or len(quantum) < 2:
                raise corrupt(position - 1)
            if len(quantum) == 2:  # "==" expected
                while position < len(data) and chr(data[position]) in "\r\n":
                    position += 1
                if position == len(data):
                    raise corrupt(len(data))
                if chr(data[position]) != "=":
                    raise corrupt(position - 1)
                position += 1
            while position < len(data) and chr(data[position]) in "\r\n":
                position += 1
            if position < len(data):
                raise corrupt(position)
            bits = sum(v << (18 - 6 * i) for i, v in enumerate(quantum))
            out += bits.to_bytes(3, "big")[: len(quantum) - 1]
            return bytes(out)
        bits = sum(v << (18 - 6 * i) for i, v in enumerate(quantum))
        out += bits.to_bytes(3, "big")


def _symmetric_decrypt(key: bytes, value: str) -> str:
    """symmetricCrypter.DecryptValue: v1:NONCE:CIPHERTEXT, AES-256-GCM."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    parts = value.split(":")
    if len(parts) != 3:
        raise ValueError("bad value")
    if parts[0] != "v1":
        raise ValueError("unknown value version")
    nonce = _go_base64(parts[1])
    sealed = _go_base64(parts[2])
    if len(nonce) != 12:
        raise ValueError("bad value: nonce size is incorrect")
    try:
        return AESGCM(key).decrypt(nonce, sealed, None).decode("utf-8", "replace")
    except InvalidTag:
        raise ValueError("cipher: message authentication failed") from None


_DIY_SCHEMES = ("file:", "s3:", "gs:", "azblob:", "postgres:")


def _diy_backend() -> bool:
    """Whether the CLI's backend is a DIY one (whose default secrets provider is the passphrase):
    PULUMI_BACKEND_URL, else the `current` of PULUMI_HOME's credentials.json."""
    url = os.environ.get("PULUMI_BACKEND_URL")
    if url is None:
        home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            url = json.loads((home / "credentials.json").read_text(encoding="utf-8")).get("current")
    return str(url or "").startswith(_DIY_SCHEMES)


@dataclass(frozen=True)
class _Crypter:
    """The stack's secrets manager as far as it can be had offline: a key, or why not."""

    key: bytes | None
    why: str = ""
    fresh: bool = False  # a salt the engine would mint now: nothing written before decrypts


def _secrets_manager(document: Mapping[str, Any], file_name: str, needed: bool) -> _Crypter:
    """GetSecretsManager (pkg/cmd/pulumi/stack/secrets.go) with the passphrase provider
    (pkg/secrets/passphrase): the salt's form is checked always, the passphrase when `needed`
    (the file holds secrets)."""
    provider = str(document.get("secretsprovider") or "")
    salt = str(document.get("encryptionsalt") or "")
    if provider not in ("", "default", "passphrase"):
        return _Crypter(None, f"the secrets provider {provider!r} needs the Pulumi CLI")
    if not salt:
        if _diy_backend():
            return _Crypter(None, "the stack has no `encryptionsalt:`", fresh=True)
        return _Crypter(
            None, "the stack has no `encryptionsalt:`: its secrets are the Pulumi Cloud's"
        )
    state = salt.split(":", 2)
    problem = (
        "malformed state value"
        if len(state) != 3
        else "unknown state version"
        if state[0] != "v1"
        else ""
    )
    salt_bytes = b""
    if not problem:
        try:
            salt_bytes = base64.b64decode(state[1], validate=True)
        except binascii.Error:
            problem = f"illegal base64 data in the salt {excerpt(state[1])}"
    if problem:
        raise DicomBqError(f"{file_name}: get stack secrets manager: {problem} (encryptionsalt)")
    if not needed:
        return _Crypter(None, "no secrets")
    phrase = _passphrase()
    if phrase is None:
        return _Crypter(
            None, "PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) is not set"
        )
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return _Crypter(None, "decrypting needs the `cryptography` package")
    key = hashlib.pbkdf2_hmac("sha256", phrase.encode(), salt_bytes, PASSPHRASE_ITERATIONS, 32)
    try:
        correct = _symmetric_decrypt(key, state[2]) == "pulumi"
    except ValueError:
        correct = False
    if not correct:
        raise DicomBqError(
            f"{file_name}: get stack secrets manager: incorrect passphrase (set "
            "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE to the stack's passphrase)"
        )
    return _Crypter(key)


def _decrypt_all(crypter: _Crypter, ciphertexts: list[str], file_name: str) -> dict[str, str]:
    """BatchDecrypt: the plaintexts, or the engine's error for the first that fails."""
    reveal = {}
    for ciphertext in ciphertexts:
        try:
            if crypter.key is None:  # a fresh salt: the form is checked, then GCM fails
                _symmetric_decrypt(bytes(32), ciphertext)
                raise ValueError("cipher: message authentication failed")
            reveal[ciphertext] = _symmetric_decrypt(crypter.key, ciphertext)
        except ValueError as error:
            raise DicomBqError(
                f"{file_name}: a secret (`secure:`) cannot be decrypted: {error}"
            ) from None
    return reveal


def _ciphertexts(value: Any) -> list[str]:
    """The secrets in a value (read again, `_objects`), in order."""
    if isinstance(value, _Secret):
        return [value.ciphertext]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _ciphertexts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _ciphertexts(item)]
    return []


# --------------------------------------------------------------------------------------------
# The stack file and the merge


def _stack_document(document: Any, file_name: str) -> dict[str, Any]:
    """SimplifyMarshalledProject: the file is a map with text keys (or empty)."""
    if document is None:
        return {}
    try:
        simplified = _simplify(document)
    except DicomBqError as error:
        raise DicomBqError(f"{file_name}: {error.message}") from None
    if not isinstance(simplified, dict):
        raise DicomBqError(
            f"{file_name}: expected project to be an object, was '{_go_type_name(simplified)}' "
            "(a stack file is a map with a 'config:' map of key: value)"
        )
    for name in ("secretsprovider", "encryptedkey", "encryptionsalt"):
        if isinstance(simplified.get(name), (dict, list)):
            kind = "!!map" if isinstance(simplified[name], dict) else "!!seq"
            raise DicomBqError(
                f"{file_name}: yaml: unmarshal errors:\n  cannot unmarshal {kind} into string "
                f"({name} is a text)"
            )
    return simplified


def _not_a_map(document: Mapping[str, Any], config: Any) -> str:
    """yaml.v3's `line N: cannot unmarshal !!TAG VALUE`, N in the file as the engine writes it
    back (keys sorted, one line each)."""
    line = 1 + sum(1 for key in document if key < "config")
    if isinstance(config, list):
        return f"line {line + (1 if config else 0)}: cannot unmarshal !!seq"
    text = _yaml_text(config)
    tag = (
        "!!bool"
        if isinstance(config, bool)
        else "!!int"
        if isinstance(config, int)
        else "!!float"
        if isinstance(config, float)
        else "!!timestamp"
        if isinstance(config, _Timestamp)
        else "!!str"
    )
    shown = f"{text[:7]}..." if len(text) > 10 else text
    return f"line {line}: cannot unmarshal {tag} `{shown}`"


def merge_stack_config(
    project: Mapping[str, Any], document: Any, stack: str, file_name: str
) -> StackConfig:
    """LoadProjectStack, then mergeConfig + validateStackConfigValues, for a stack file read
    offline (`document` as _read_yaml_v3 decoded it). Errors come in the engine's order."""
    short = stack.rsplit("/", 1)[-1]
    document = _stack_document(document, file_name)
    name = str(project["name"])
    config = document.get("config")
    if config is None:
        config = {}
    if not isinstance(config, (dict, _AnyKeyMap)):
        raise DicomBqError(
            f"{file_name}: invalid YAML file: could not unmarshal map: yaml: unmarshal errors:\n"
            f"  {_not_a_map(document, config)} into map[string]config.Value (the file must "
            "hold a 'config:' map of key: value)"
        )
    notes: list[str] = []
    # stackConfigNamespacedWithProject (a map of text keys only), checkForEmptyConfig.
    if isinstance(config, _AnyKeyMap):
        pairs = [(k if isinstance(k, str) else _yaml_text(k), v) for k, v in config.pairs]
    else:
        pairs = [(k if ":" in k else f"{name}:{k}", v) for k, v in config.items()]
        nulls = sorted(k for k, v in pairs if v is None)
        if nulls:
            notes.append(
                _NULL_WARNING.format(
                    s="s" if len(nulls) > 1 else "",
                    keys=(", " if len(nulls) > 2 else " and ").join(f'"{k}"' for k in nulls),
                )
            )
    # The file written back and read again into config.Map: each value (keys sorted), then
    # ParseKey on each key (ns:config:name is ns:name).
    reread: dict[str, Any] = {}
    for written, value in sorted(pairs, key=lambda pair: pair[0]):
        try:
            again = _objects(_reread(value))
            if not _has_secret(again):
                _stack_value(again, {})  # MarshalString: a number must be finite
        except _UnsupportedValueError as error:
            raise DicomBqError(
                f"{file_name}: invalid YAML file: could not unmarshal map: {error} "
                f"({written}: a number must be finite)"
            ) from None
        except _YamlV3Error as error:
            raise DicomBqError(f"{file_name}: invalid YAML file: {error.message}") from None
        reread[written] = again
    raw: dict[str, Any] = {}
    spelled: dict[str, list[str]] = {}
    for written, _ in pairs:
        key = _parse_key(written)
        if key is None:
            raise DicomBqError(
                f"{file_name}: invalid YAML file: could not unmarshal map: {_key_error(written)}"
            )
        spelled.setdefault(key, []).append(written)
        if key not in raw or written == key:
            raw[key] = reread[written]
    for key, spellings in spelled.items():
        if len(spellings) > 1:
            notes.append(
                f"{file_name} sets {key} {len(spellings)} times ({', '.join(spellings)}): the "
                "engine keeps one of them at random; this reading keeps the one written "
                f"{key}. Keep one spelling"
            )
    crypter = _secrets_manager(document, file_name, any(_has_secret(v) for v in raw.values()))
    environments = _environments(document)
    declared = declared_keys(project)
    # mergeConfig: the project's defaults and values, and the keys no one sets.
    settled = {key: _stack_value(value, {}) for key, value in raw.items() if not _has_secret(value)}
    missing = []
    for item in declared:
        if item.key in raw:
            continue
        initial = item.default if item.default is not None else item.value
        if initial is not None:
            try:
                settled[item.key] = _project_value(initial)
            except _UnsupportedValueError as error:
                raise DicomBqError(f"Pulumi.yaml: {item.written}: {error}") from None
        elif item.key.split(":", 1)[0] == name:
            missing.append(item.written)
    if environments:
        notes.insert(
            0,
            f"stack {short!r} imports Pulumi ESC environment(s) {', '.join(environments)}, which "
            "only a logged-in `pulumi` CLI can open: values they set are not shown here"
            + (f", and {_enumerate(missing)} may come from them" if missing else ""),
        )
    elif missing:
        word = "value" if len(missing) == 1 else "values"
        raise DicomBqError(
            f"Stack '{short}' is missing configuration {word} {_enumerate(missing)} (Pulumi "
            f"stops here too): set each with `pulumi config set {PROJECT_NAME}:KEY VALUE "
            f"--stack {short}`"
        )
    # validateStackConfigValues: decrypt every secret, then check each typed key.
    secret = {key: value for key, value in raw.items() if _has_secret(value)}
    if secret:
        ciphertexts = [text for value in secret.values() for text in _ciphertexts(value)]
        if crypter.key is not None or crypter.fresh:
            reveal = _decrypt_all(crypter, ciphertexts, file_name)
            settled.update({key: _stack_value(value, reveal) for key, value in secret.items()})
        elif any(key.startswith(f"{name}:") for key in secret):
            own = sorted(key for key in secret if key.startswith(f"{name}:"))
            raise DicomBqError(
                f"{own[0]} in {file_name} is a secret, which cannot be read offline here "
                f"({crypter.why}): dicom-bq settings hold no secrets, store it in plain text"
            )
        else:
            notes.append(
                f"{file_name} holds secrets of other namespaces ({', '.join(sorted(secret))}), "
                f"not decrypted offline ({crypter.why})"
            )
    for item in declared:  # sorted, as the engine checks them
        if item.type is None or (item.key not in settled and environments):
            continue
        value = settled.get(item.key, _Value(None))
        if item.secret and not value.secure:
            raise DicomBqError(
                f"Stack '{short}' with configuration key '{item.written}' must be encrypted as "
                "it's secret"
            )
        content = json.loads(value.text) if value.is_object else value.text
        if not item.type.accepts(content):
            raise DicomBqError(
                f"Stack '{short}' with configuration key '{item.written}' must be of type "
                f"'{item.type.full_name()}'"
            )
    return StackConfig(
        stack=short,
        values={k: json.loads(v.text) if v.is_object else v.text for k, v in settled.items()},
        environments=environments,
        notes=notes,
    )


def read_stack_config(project_dir: Path, stack: str, use_cli: bool = True) -> StackConfig:
    """The stack's config as the engine would give it to the program."""
    project = read_project(project_dir)
    path = _stack_file(project_dir, stack)
    document = _read_yaml_v3(_read_text(path), path.name)
    offline = merge_stack_config(project, document, stack, path.name)
    if offline.environments and use_cli and shutil.which("pulumi"):
        return _resolve_with_cli(project_dir, project, offline)
    return offline


def _resolve_with_cli(
    project_dir: Path, project: Mapping[str, Any], offline: StackConfig
) -> StackConfig:
    """The real merged config, ESC environments included, from the Pulumi CLI: `pulumi config
    --show-secrets --json --stack S` (what the Automation API's get_all_config runs), with a
    deadline and a bounded answer (stack.outputs.run_pulumi_read). When it fails, the offline
    reading is kept, with a note quoting the end of what Pulumi said."""
    from dicom_bq.stack import outputs

    arguments = ["--non-interactive", "config", "--show-secrets", "--json"]
    arguments += ["--stack", offline.stack]

    def unresolved(why: str) -> StackConfig:
        return StackConfig(
            stack=offline.stack,
            values=offline.values,
            environments=offline.environments,
            notes=[
                *offline.notes,
                f"`pulumi config` could not open them ({why}); run `pulumi login` to see the "
                "whole config",
            ],
        )

    try:
        answer = outputs.run_pulumi_read(
            arguments, project_dir, executable=outputs.pulumi_executable(), limit=MAX_CONFIG_BYTES
        )
    except DicomBqError as error:  # no answer in time, or too large an answer
        return unresolved(output_excerpt(error.message, lines=1, limit=300))
    if answer.returncode != 0:
        said = [
            line.strip()
            for line in answer.said().splitlines()
            if line.strip() and not line.strip().endswith(":")
        ]
        return unresolved((said[-1:] or [f"exit code {answer.returncode}"])[0][:200])
    try:
        config = files.loads_json(answer.stdout.decode("utf-8"), what="`pulumi config --json`")
        if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
            raise ValueError
        pairs = {str(key): str(item.get("value") or "") for key, item in config.items()}
    except (ValueError, DicomBqError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return unresolved("it did not answer a JSON object of config values")
    objects = {
        d.key for d in declared_keys(project) if d.type and d.type.name in ("array", "object")
    }
    values: dict[str, Any] = {}
    for key, text in pairs.items():
        value: Any = text
        if key in objects or key == f"{PROJECT_NAME}:labels":
            with contextlib.suppress(ValueError, DicomBqError):
                value = files.loads_json(text, what=f"config value {key}")
        values[key] = value
    return StackConfig(
        stack=offline.stack,
        values=values,
        environments=offline.environments,
        notes=[f"config read with `pulumi config`, environments {', '.join(offline.environments)}"],
        resolved_by_cli=True,
    )
