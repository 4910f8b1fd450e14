"""stack/config.py's emulation of Go's texts held to what Go prints (issue 19, mutation testing):
strconv.FormatFloat and ParseInt/ParseUint, encoding/json, encoding/base64, fmt's %s, %v, %T
and %#v, and yaml.v3's timestamps with time.Time.String() and RFC 3339. Every expected text here
was printed by Go (go1.26, gopkg.in/yaml.v3 v3.0.1, TZ=UTC as on the engine's machine), from a
throwaway program calling the function each helper names; tests/test_pulumi_config.py reads
whole stack files."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dicom_bq.errors import DicomBqError
from dicom_bq.stack.config import (
    _AnyKeyMap,
    _decoded_yaml_v3,
    _go_base64,
    _go_format_g,
    _go_json,
    _go_parse_int,
    _go_percent_s,
    _go_percent_v,
    _go_quote,
    _go_timestamp,
    _go_type_name,
    _Timestamp,
    _UnsupportedValueError,
)

# (value, strconv.FormatFloat(v, 'g', -1, 64), json.Marshal(v)); fmt's %v is the first.
FLOATS: list[tuple[float, str, str]] = [
    (0.0, "0", "0"),
    (-0.0, "-0", "-0"),
    (math.inf, "+Inf", "json: unsupported value: +Inf"),
    (-math.inf, "-Inf", "json: unsupported value: -Inf"),
    (math.nan, "NaN", "json: unsupported value: NaN"),
    (1.0, "1", "1"),
    (1.5, "1.5", "1.5"),
    (-1.5, "-1.5", "-1.5"),
    (0.5, "0.5", "0.5"),
    (0.0001, "0.0001", "0.0001"),
    (-0.0001, "-0.0001", "-0.0001"),
    (1e-05, "1e-05", "0.00001"),
    (1.5e-05, "1.5e-05", "0.000015"),
    (100000.0, "100000", "100000"),
    (1000000.0, "1e+06", "1000000"),
    (1500000.0, "1.5e+06", "1500000"),
    (-1500000.0, "-1.5e+06", "-1500000"),
    (123456789.0, "1.23456789e+08", "123456789"),
    (1e-06, "1e-06", "0.000001"),
    (1e-07, "1e-07", "1e-7"),
    (1.5e-07, "1.5e-07", "1.5e-7"),
    (-1.5e-07, "-1.5e-07", "-1.5e-7"),
    (1.25e-07, "1.25e-07", "1.25e-7"),
    (1e21, "1e+21", "1e+21"),
    (-1e21, "-1e+21", "-1e+21"),
    (1.5e21, "1.5e+21", "1.5e+21"),
    (1e22, "1e+22", "1e+22"),
    (1e-100, "1e-100", "1e-100"),
    (1.5e-100, "1.5e-100", "1.5e-100"),
    (1.5e100, "1.5e+100", "1.5e+100"),
]


@pytest.mark.parametrize(("value", "g", "json_text"), FLOATS)
def test_a_float_is_written_as_go_writes_it(value: float, g: str, json_text: str) -> None:
    assert _go_format_g(value) == g
    assert _go_percent_v(value) == g
    assert _go_percent_s(value) == f"%!s(float64={g})"
    if math.isfinite(value):
        assert _go_json(value) == json_text
        assert _go_json(value, objects=True) == json_text
    else:
        with pytest.raises(_UnsupportedValueError) as error:
            _go_json(value)
        assert str(error.value) == json_text


# (text, ParseInt (True) or ParseUint (False), the value, None when Go refuses it).
INTS: list[tuple[str, bool, int | None]] = [
    ("0", True, 0),
    ("0", False, 0),
    ("7", True, 7),
    ("08", True, None),
    ("017", True, 15),
    ("017", False, 15),
    ("0o17", True, 15),
    ("0O17", False, 15),
    ("0b101", True, 5),
    ("0B101", False, 5),
    ("0x1F", True, 31),
    ("0X1f", False, 31),
    ("+5", True, 5),
    ("+5", False, None),
    ("-5", True, -5),
    ("-5", False, None),
    ("-0x1f", True, -31),
    ("-017", True, -15),
    ("-0o17", True, -15),
    ("-0b11", True, -3),
    ("9223372036854775807", True, 9223372036854775807),
    ("9223372036854775808", True, None),
    ("9223372036854775808", False, 9223372036854775808),
    ("-9223372036854775808", True, -9223372036854775808),
    ("-9223372036854775809", True, None),
    ("18446744073709551615", False, 18446744073709551615),
    ("18446744073709551616", False, None),
    ("0x", True, None),
    ("0b2", True, None),
    ("0o8", True, None),
    ("1a", True, None),
    ("", True, None),
    ("-", True, None),
    ("--5", True, None),
]


@pytest.mark.parametrize(("text", "signed", "value"), INTS)
def test_an_integer_is_read_as_strconv_reads_it(text: str, signed: bool, value: int | None) -> None:
    assert _go_parse_int(text, signed) == value


# (text, base64.StdEncoding.DecodeString's bytes, or its error after "illegal base64 data at
# input byte ").
BASE64: list[tuple[str, bytes | int]] = [
    ("", b""),
    ("QUJD", b"ABC"),
    ("QUJDRA==", b"ABCD"),
    ("QUJDREU=", b"ABCDE"),
    ("QUI=", b"AB"),
    ("QU\nJD", b"ABC"),
    ("QU\r\nJD\r\n", b"ABC"),
    ("QUJDREVGR0hJSktM", b"ABCDEFGHIJKL"),
    ("+/+/", b"\xfb\xff\xbf"),
    ("QUJDQQ", 4),
    ("QUJ", 0),
    ("Q===", 1),
    ("Q=", 1),
    ("=", 0),
    ("QU!", 2),
    ("QUJD!", 4),
    ("QQ=X=", 2),
    ("QQ=\n=", b"A"),
    ("QQ=\r\n=", b"A"),
    ("QQ=", 3),
    ("QQ=\n", 4),
    ("QQ=A", 2),
    ("QQ==A", 4),
    ("QQ==X", 4),
    ("QQ==\n", b"A"),
    ("QQ==\nA", 5),
    ("QQ==\r\n\r\nA", 8),
    ("QUI=\n", b"AB"),
    ("QUI=A", 4),
    # Go counts bytes: a character of two bytes moves what follows by two.
    ("é", 0),
    ("QQé=", 2),
    ("AAAAé", 4),
    ("QQ\r\né", 4),
    # A byte that is not UTF-8 text (surrogate-escaped, as os.fsdecode gives it) is one byte.
    ("\udcff", 0),
    ("QUJD\udcff", 4),
]


@pytest.mark.parametrize(("text", "decoded"), BASE64)
def test_base64_is_decoded_as_go_decodes_it(text: str, decoded: bytes | int) -> None:
    if isinstance(decoded, bytes):
        assert _go_base64(text) == decoded
    else:
        with pytest.raises(ValueError, match="illegal base64") as error:
            _go_base64(text)
        assert str(error.value) == f"bad value: illegal base64 data at input byte {decoded}"


# (plain YAML scalar, time.Time.String() and RFC3339Nano of what yaml.v3 decodes, or None: not
# a timestamp, yaml.v3 reads it as something else).
TIMESTAMPS: list[tuple[str, str | None, str | None]] = [
    ("2001-02-03", "2001-02-03 00:00:00 +0000 UTC", "2001-02-03T00:00:00Z"),
    ("2001-2-3", "2001-02-03 00:00:00 +0000 UTC", "2001-02-03T00:00:00Z"),
    ("2001-02-03T04:05:06Z", "2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    (
        "2001-12-31t23:59:59.123456789Z",
        "2001-12-31 23:59:59.123456789 +0000 UTC",
        "2001-12-31T23:59:59.123456789Z",
    ),
    ("2001-02-03 04:05:06", "2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    ("2001-2-3 4:5:6,5", "2001-02-03 04:05:06.5 +0000 UTC", "2001-02-03T04:05:06.5Z"),
    (
        "2001-02-03T04:05:06.05+05:30",
        "2001-02-03 04:05:06.05 +0530 +0530",
        "2001-02-03T04:05:06.05+05:30",
    ),
    ("2001-02-03T04:05:06-05:30", "2001-02-03 04:05:06 -0530 -0530", "2001-02-03T04:05:06-05:30"),
    ("2001-02-03T04:05:06+12:45", "2001-02-03 04:05:06 +1245 +1245", "2001-02-03T04:05:06+12:45"),
    ("2001-02-03T04:05:06-12:07", "2001-02-03 04:05:06 -1207 -1207", "2001-02-03T04:05:06-12:07"),
    ("2001-02-03T04:05:06+24:00", "2001-02-03 04:05:06 +2400 +2400", "2001-02-03T04:05:06+24:00"),
    ("2001-02-03T04:05:06+05:59", "2001-02-03 04:05:06 +0559 +0559", "2001-02-03T04:05:06+05:59"),
    ("2001-02-03T04:05:06-00:00", "2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    ("2001-02-03T04:05:06+00:30", "2001-02-03 04:05:06 +0030 +0030", "2001-02-03T04:05:06+00:30"),
    ("2001-02-03T04:05:06-00:30", "2001-02-03 04:05:06 -0030 -0030", "2001-02-03T04:05:06-00:30"),
    (
        "2001-02-03T04:05:06.1234567891Z",
        "2001-02-03 04:05:06.123456789 +0000 UTC",
        "2001-02-03T04:05:06.123456789Z",
    ),
    (
        "2001-02-03T04:05:06.000000001Z",
        "2001-02-03 04:05:06.000000001 +0000 UTC",
        "2001-02-03T04:05:06.000000001Z",
    ),
    ("2001-02-03T04:05:06.100Z", "2001-02-03 04:05:06.1 +0000 UTC", "2001-02-03T04:05:06.1Z"),
    ("2001-02-03 04:05:06.0", "2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    ("2001-01-31", "2001-01-31 00:00:00 +0000 UTC", "2001-01-31T00:00:00Z"),
    ("2004-02-29", "2004-02-29 00:00:00 +0000 UTC", "2004-02-29T00:00:00Z"),
    ("2001-01-01", "2001-01-01 00:00:00 +0000 UTC", "2001-01-01T00:00:00Z"),
    ("2001-12-01", "2001-12-01 00:00:00 +0000 UTC", "2001-12-01T00:00:00Z"),
    ("0000-02-29", "0000-02-29 00:00:00 +0000 UTC", "0000-02-29T00:00:00Z"),
    ("2001-13-01", None, None),
    ("2001-00-01", None, None),
    ("2001-01-00", None, None),
    ("2001-01-32", None, None),
    ("2001-02-29", None, None),
    ("2001-04-31", None, None),
    ("2001-01-01T24:00:00Z", None, None),
    ("2001-01-01T00:60:00Z", None, None),
    ("2001-01-01T00:00:60Z", None, None),
    ("2001-01-01T00:00:00+25:00", None, None),
    ("2001-01-01T00:00:00+05:61", None, None),
    ("2001-01-01T00:00:00z", None, None),
    ("2001-01-01 00:00:00Z", None, None),
    ("2001-01-01T00:00:00", None, None),
    ("2001-01-01T00:00:00+0530", None, None),
    ("2001-01-01T00:00:00.Z", None, None),
    ("20010-01-01", None, None),
    ("2001-001-01", None, None),
    # time.Parse takes a zone minute of 60 (its check is > 60) and a run of spaces for the
    # layout's one space; its digits are ASCII ones only.
    ("2001-02-03T04:05:06+05:60", "2001-02-03 04:05:06 +0600 +0600", "2001-02-03T04:05:06+06:00"),
    ("2001-02-03T04:05:06-00:60", "2001-02-03 04:05:06 -0100 -0100", "2001-02-03T04:05:06-01:00"),
    ("2001-02-03T04:05:06+24:60", "2001-02-03 04:05:06 +2500 +2500", "2001-02-03T04:05:06+25:00"),
    ("2001-02-03T04:05:06-23:60", "2001-02-03 04:05:06 -2400 -2400", "2001-02-03T04:05:06-24:00"),
    ("2001-02-03  04:05:06", "2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    ("2001-02-03   04:05:06.5", "2001-02-03 04:05:06.5 +0000 UTC", "2001-02-03T04:05:06.5Z"),
    ("2001-02-03\t04:05:06", None, None),
    ("2001-02-03 04:05:06 ", None, None),
    ("2\u0660\u06601-01-01", None, None),
    ("2001-0\u0661-01", None, None),
    ("2001-01-01T00:00:00+0\u0665:00", None, None),
]


@pytest.mark.parametrize(("text", "go_string", "rfc3339"), TIMESTAMPS)
def test_a_timestamp_is_read_and_written_as_go_does(
    text: str, go_string: str | None, rfc3339: str | None
) -> None:
    stamp = _go_timestamp(text)
    if go_string is None:
        assert stamp is None
        return
    assert stamp == _Timestamp(go_string, str(rfc3339))
    assert _go_percent_v(stamp) == go_string
    assert _go_percent_s(stamp) == go_string
    assert _go_type_name(stamp) == "time.Time"


# (timestamp, json.Marshal of it, alone and in a list). Go refuses a zone of 24 hours or more
# ("Time.MarshalJSON: timezone hour outside of range [0,23]"): not modelled, a project default
# is the only timestamp written as JSON.
@pytest.mark.parametrize(
    ("text", "json_text"),
    [
        ("2001-02-03", '"2001-02-03T00:00:00Z"'),
        ("2001-02-03T04:05:06.05+05:30", '"2001-02-03T04:05:06.05+05:30"'),
        ("2001-02-03T04:05:06-00:00", '"2001-02-03T04:05:06Z"'),
    ],
)
def test_a_timestamp_is_written_as_json_as_go_writes_it(text: str, json_text: str) -> None:
    stamp = _go_timestamp(text)
    assert _go_json(stamp) == json_text
    assert _go_json([stamp], objects=True) == f"[{json_text}]"


# (Go value, %T, fmt's %s of it, %v of it).
SCALARS: list[tuple[Any, str, str, str]] = [
    (None, "<nil>", "%!s(<nil>)", "<nil>"),
    (True, "bool", "%!s(bool=true)", "true"),
    (False, "bool", "%!s(bool=false)", "false"),
    (0, "int", "%!s(int=0)", "0"),
    (-9223372036854775808, "int", "%!s(int=-9223372036854775808)", "-9223372036854775808"),
    (9223372036854775807, "int", "%!s(int=9223372036854775807)", "9223372036854775807"),
    (9223372036854775808, "uint64", "%!s(uint64=9223372036854775808)", "9223372036854775808"),
    (1.5, "float64", "%!s(float64=1.5)", "1.5"),
    (1e6, "float64", "%!s(float64=1e+06)", "1e+06"),
]


@pytest.mark.parametrize(("value", "type_name", "percent_s", "percent_v"), SCALARS)
def test_fmt_names_and_shows_a_value_as_go_does(
    value: Any, type_name: str, percent_s: str, percent_v: str
) -> None:
    assert _go_type_name(value) == type_name
    assert _go_percent_s(value) == percent_s
    assert _go_percent_v(value) == percent_v


def test_fmt_names_text_and_collections_as_go_does() -> None:
    assert _go_type_name("x") == "string"
    assert _go_percent_v("x") == "x"
    assert _go_type_name(["x"]) == "[]interface {}"
    assert _go_type_name({"x": 1}) == "map[string]interface {}"
    assert _go_type_name(_AnyKeyMap(((1, "x"),))) == "map[interface {}]interface {}"


# (Go value, json.Marshal of it, and of it as a config object: numbers through json.Number).
JSON: list[tuple[Any, str, str]] = [
    (None, "null", "null"),
    (True, "true", "true"),
    (False, "false", "false"),
    (18446744073709551615, "18446744073709551615", "18446744073709552000"),
    (
        [1, -1, 9223372036854775807, -9223372036854775808, 9007199254740993, 18446744073709551615],
        "[1,-1,9223372036854775807,-9223372036854775808,9007199254740993,18446744073709551615]",
        "[1,-1,9223372036854775807,-9223372036854775808,9007199254740993,18446744073709552000]",
    ),
    ({"a": 18446744073709551615}, '{"a":18446744073709551615}', '{"a":18446744073709552000}'),
    (
        {"b": [1], "a": {"d": True, "c": None}, "é": "x"},
        '{"a":{"c":null,"d":true},"b":[1],"é":"x"}',
        '{"a":{"c":null,"d":true},"b":[1],"é":"x"}',
    ),
    # HTML characters and the JavaScript line separators escaped; other text as it is.
    (
        '<a href="x">&amp;</a>',
        '"\\u003ca href=\\"x\\"\\u003e\\u0026amp;\\u003c/a\\u003e"',
        '"\\u003ca href=\\"x\\"\\u003e\\u0026amp;\\u003c/a\\u003e"',
    ),
    ("\u2028 \u2029", '"\\u2028 \\u2029"', '"\\u2028 \\u2029"'),
    ("é ✓ \U0001f600", '"é ✓ \U0001f600"', '"é ✓ \U0001f600"'),
    ('tab\t\x01\x7f"\\', '"tab\\t\\u0001\x7f\\"\\\\"', '"tab\\t\\u0001\x7f\\"\\\\"'),
]


@pytest.mark.parametrize(("value", "plain", "as_object"), JSON)
def test_json_is_written_as_go_writes_it(value: Any, plain: str, as_object: str) -> None:
    assert _go_json(value) == plain
    assert _go_json(value, objects=True) == as_object


WRAP = "json: error calling MarshalJSON for type config.object: "

# (value, json.Marshal's error, and a config object's: one MarshalerError per level around it).
UNSUPPORTED: list[tuple[Any, str, str]] = [
    ([math.nan], "json: unsupported value: NaN", WRAP + "json: unsupported value: NaN"),
    ([[math.nan]], "json: unsupported value: NaN", 2 * WRAP + "json: unsupported value: NaN"),
    ({"a": math.nan}, "json: unsupported value: NaN", WRAP + "json: unsupported value: NaN"),
    (
        {"a": [math.inf]},
        "json: unsupported value: +Inf",
        2 * WRAP + "json: unsupported value: +Inf",
    ),
    (
        [1, [2, {"a": -math.inf}]],
        "json: unsupported value: -Inf",
        3 * WRAP + "json: unsupported value: -Inf",
    ),
]


@pytest.mark.parametrize(("value", "plain", "as_object"), UNSUPPORTED)
def test_a_number_json_cannot_write_is_refused_with_gos_message(
    value: Any, plain: str, as_object: str
) -> None:
    with pytest.raises(_UnsupportedValueError) as error:
        _go_json(value)
    assert str(error.value) == plain
    with pytest.raises(_UnsupportedValueError) as error:
        _go_json(value, objects=True)
    assert str(error.value) == as_object


# (text, fmt's %#v of it, as yaml.v3 names a mapping key written twice).
QUOTED: list[tuple[str, str]] = [
    ("plain", '"plain"'),
    ("é ✓ \U0001f600", '"é ✓ \U0001f600"'),
    ('"q" \\', '"\\"q\\" \\\\"'),
    ("a\tb\nc\rd", '"a\\tb\\nc\\rd"'),
    # What Go does not print is escaped: \xHH below 0x80, \uHHHH, \UHHHHHHHH past 0xFFFF.
    ("a\x01\t\n\r\x07\x08\x0c\x0b\x1b\x7f", '"a\\x01\\t\\n\\r\\a\\b\\f\\v\\x1b\\x7f"'),
    (
        "\x80\x9f\u2028\u2029\xa0\xad\u200b\uffff",
        '"\\u0080\\u009f\\u2028\\u2029\\u00a0\\u00ad\\u200b\\uffff"',
    ),
    (
        "\U000e0001 \U0010ffff \U0001d173 \U0001f600",
        '"\\U000e0001 \\U0010ffff \\U0001d173 \U0001f600"',
    ),
]


@pytest.mark.parametrize(("text", "quoted"), QUOTED)
def test_a_key_is_quoted_as_go_quotes_it(text: str, quoted: str) -> None:
    assert _go_quote(text) == quoted


def test_yaml_v3_names_a_key_written_twice_as_go_quotes_it() -> None:
    with pytest.raises(DicomBqError) as error:
        _decoded_yaml_v3('k: {"a\\x01\\u2028": 1, "a\\x01\\u2028": 2}\n', "Pulumi.dev.yaml")
    assert 'line 1: mapping key "a\\x01\\u2028" already defined at line 1' in error.value.message


def test_yaml_v3_reads_a_zone_minute_of_60_and_spaces_as_a_timestamp() -> None:
    value = _decoded_yaml_v3("a: 2001-02-03T04:05:06+05:60\nb: 2001-02-03  04:05:06\n", "f")
    assert value == {
        "a": _Timestamp("2001-02-03 04:05:06 +0600 +0600", "2001-02-03T04:05:06+06:00"),
        "b": _Timestamp("2001-02-03 04:05:06 +0000 UTC", "2001-02-03T04:05:06Z"),
    }
