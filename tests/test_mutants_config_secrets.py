"""stack/config.py's secrets and yaml.v3 decoding held to the engine (issue 19, mutation testing):
the passphrase secrets manager (which salt, passphrase and provider decrypt, and the exact refusal
otherwise), the DIY backend's fresh salt, and yaml.v3's merge keys, tags, block scalars, !!binary
and the `line N: cannot unmarshal` of a `config:` that is not a map. tests/test_pulumi_config.py
reads whole project folders; these read one stack file's text against a bare project."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_bq.errors import DicomBqError
from dicom_bq.stack import config as stack_config
from dicom_bq.stack.config import (
    PASSPHRASE_ITERATIONS,
    StackConfig,
    _read_yaml_v3,
    merge_stack_config,
)

FILE = "Pulumi.t.yaml"
PROJECT = {"name": "dicom-bq", "runtime": "python"}
# Made with `pulumi config set --secret` (PULUMI_CONFIG_PASSPHRASE=dicom-bq-config-corpus), as in
# tests/engine/config_corpus/secrets.yaml and tests/test_pulumi_config.py.
PHRASE = "dicom-bq-config-corpus"
SALT = "v1:/XanppKndZs=:v1:y3oMAz2diBKKUYrO:TdktWa0qrZlGg81eqVNhEwEi+c4Prg=="
FILTERS = "v1:yl+cqDvGPLX+yt3K:i7xjeKJB+6QFV3fPD8eUnTWE45NMcnh7LxIuEAlP"  # corpus-filters

_pbkdf2_hmac = hashlib.pbkdf2_hmac


@functools.cache
def _derive(
    name: str, password: bytes, salt: bytes, iterations: int, length: int | None = None
) -> bytes:
    """hashlib's PBKDF2, once per argument list: a million rounds cost half a second."""
    return _pbkdf2_hmac(name, password, salt, iterations, length)


# The stack's key, as the engine derives it from the passphrase and the salt.
KEY = _derive(
    "sha256", PHRASE.encode(), base64.b64decode("/XanppKndZs="), PASSPHRASE_ITERATIONS, 32
)


def seal(plaintext: bytes, key: bytes = KEY, nonce: bytes = b"\x07" * 12) -> str:
    """A ciphertext as symmetricCrypter.EncryptValue writes it: v1:NONCE:SEALED."""
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No passphrase, no backend, an empty home; PBKDF2 remembered across calls."""
    for name in (
        "PULUMI_CONFIG_PASSPHRASE",
        "PULUMI_CONFIG_PASSPHRASE_FILE",
        "PULUMI_BACKEND_URL",
        "PULUMI_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", _derive)


def read(text: str) -> StackConfig:
    return merge_stack_config(PROJECT, _read_yaml_v3(text, FILE), "t", FILE)


def refused(text: str) -> str:
    with pytest.raises(DicomBqError) as error:
        read(text)
    return error.value.message


def with_secret(ciphertext: str, head: str = f"encryptionsalt: {SALT}\n") -> str:
    return f"{head}config:\n  dicom-bq:filterBucket:\n    secure: {ciphertext}\n"


def offline_refusal(why: str) -> str:
    return (
        f"dicom-bq:filterBucket in {FILE} is a secret, which cannot be read offline here ({why}): "
        "dicom-bq settings hold no secrets, store it in plain text"
    )


def cannot_decrypt(error: str) -> str:
    return f"{FILE}: a secret (`secure:`) cannot be decrypted: {error}"


# --- the passphrase secrets manager -------------------------------------------------------------


@pytest.mark.parametrize(
    "provider", ["", "secretsprovider: default\n", "secretsprovider: passphrase\n"]
)
def test_the_passphrase_provider_decrypts_with_the_salt(
    monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PHRASE)
    config = read(with_secret(FILTERS, head=f"{provider}encryptionsalt: {SALT}\n"))
    assert config.values["dicom-bq:filterBucket"] == "corpus-filters"


def test_a_plaintext_that_is_not_utf8_reaches_the_program_as_json_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Go keeps the bytes; encoding/json, which hands config to the program, writes U+FFFD.
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PHRASE)
    config = read(with_secret(seal(b"a\xffb")))
    assert config.values["dicom-bq:filterBucket"] == "a\ufffdb"


def test_the_passphrase_file_is_read_when_the_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    phrase_file = tmp_path / "phrase"
    phrase_file.write_text(f"  {PHRASE}\n", encoding="utf-8")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(phrase_file))
    assert read(with_secret(FILTERS)).values["dicom-bq:filterBucket"] == "corpus-filters"


def test_an_unreadable_passphrase_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-file"
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(missing))
    assert refused(with_secret(FILTERS)) == (
        f"unable to read PULUMI_CONFIG_PASSPHRASE_FILE: [Errno 2] No such file or directory: "
        f"'{missing}'"
    )


def test_a_wrong_passphrase_is_refused_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "not-it")
    monkeypatch.setattr(stack_config, "PASSPHRASE_ITERATIONS", 1)  # any wrong key will do
    assert refused(with_secret(FILTERS)) == (
        f"{FILE}: get stack secrets manager: incorrect passphrase (set PULUMI_CONFIG_PASSPHRASE "
        "or PULUMI_CONFIG_PASSPHRASE_FILE to the stack's passphrase)"
    )


def test_without_a_passphrase_a_project_secret_is_refused() -> None:
    assert refused(with_secret(FILTERS)) == offline_refusal(
        "PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) is not set"
    )


def test_without_the_cryptography_package_a_project_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PHRASE)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    assert refused(with_secret(FILTERS)) == offline_refusal(
        "decrypting needs the `cryptography` package"
    )


def test_another_provider_is_left_to_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the salt and the passphrase at hand, a KMS stack's secrets are still not ours to read.
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PHRASE)
    head = f"secretsprovider: awskms://alias/stack\nencryptionsalt: {SALT}\n"
    assert refused(with_secret(FILTERS, head=head)) == offline_refusal(
        "the secrets provider 'awskms://alias/stack' needs the Pulumi CLI"
    )


@pytest.mark.parametrize(
    ("salt", "problem"),
    [
        ("v1:abc", "malformed state value"),
        ("v2:/XanppKndZs=:v1:x", "unknown state version"),
        ("v1:@@@@AAAA:v1:x", "illegal base64 data in the salt '@@@@AAAA'"),
    ],
)
def test_a_malformed_salt_is_refused_even_without_secrets(salt: str, problem: str) -> None:
    assert refused(f"encryptionsalt: {salt}\nconfig:\n  dicom-bq:location: EU\n") == (
        f"{FILE}: get stack secrets manager: {problem} (encryptionsalt)"
    )


@pytest.mark.parametrize(
    ("ciphertext", "error"),
    [
        ("v1:abc", "bad value"),
        ("v2:AAAAAAAAAAAAAAAA:AAAA", "unknown value version"),
        ("v1:AAAA:AAAAAAAAAAAAAAAAAAAAAA==", "bad value: nonce size is incorrect"),
        (seal(b"corpus-filters", key=bytes(range(32))), "cipher: message authentication failed"),
    ],
)
def test_a_secret_that_does_not_decrypt_is_refused_with_the_engines_error(
    monkeypatch: pytest.MonkeyPatch, ciphertext: str, error: str
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PHRASE)
    assert refused(with_secret(ciphertext)) == cannot_decrypt(error)


# --- no salt: the backend decides (a DIY backend mints a fresh salt, Pulumi Cloud holds the key)


def write_credentials(home: Path, content: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (home / "credentials.json").write_text(text, encoding="utf-8")


CLOUD = "https://api.pulumi.com"


@pytest.mark.parametrize(
    ("backend_url", "pulumi_home", "dot_pulumi", "diy"),
    [
        ("file:///srv/state", {"current": CLOUD}, {"current": CLOUD}, True),
        (CLOUD, {"current": "file:///srv/state"}, {"current": "file:///srv/state"}, False),
        (None, {"current": "s3://bucket"}, {"current": CLOUD}, True),
        (None, None, {"current": "gs://bucket"}, True),
        (None, None, {"current": "azblob://container"}, True),
        (None, None, {"current": CLOUD}, False),
        (None, None, "{not json", False),
        (None, None, ["file:///srv/state"], False),
        (None, None, {"current": None}, False),
        (None, None, None, False),
    ],
)
def test_without_a_salt_the_backend_decides_what_a_secret_is(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    backend_url: str | None,
    pulumi_home: Any,
    dot_pulumi: Any,
    diy: bool,
) -> None:
    if backend_url is not None:
        monkeypatch.setenv("PULUMI_BACKEND_URL", backend_url)
    if pulumi_home is not None:
        write_credentials(tmp_path / "pulumi-home", pulumi_home)
        monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    if dot_pulumi is not None:
        write_credentials(tmp_path / "home" / ".pulumi", dot_pulumi)
    message = refused(with_secret(FILTERS, head=""))
    if diy:  # a salt made now decrypts nothing written before it
        assert message == cannot_decrypt("cipher: message authentication failed")
    else:
        assert message == offline_refusal(
            "the stack has no `encryptionsalt:`: its secrets are the Pulumi Cloud's"
        )


@pytest.mark.parametrize(
    ("ciphertext", "error"),
    [
        # Sealed with the all-zero key: no key the engine mints opens it either.
        (seal(b"corpus-filters", key=bytes(32)), "cipher: message authentication failed"),
        ("v1:abc", "bad value"),  # the form is checked first
    ],
)
def test_a_fresh_salt_decrypts_nothing(
    monkeypatch: pytest.MonkeyPatch, ciphertext: str, error: str
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///srv/state")
    assert refused(with_secret(ciphertext, head="")) == cannot_decrypt(error)


# --- yaml.v3: merge keys -------------------------------------------------------------------------


def decoded(text: str) -> Any:
    return _read_yaml_v3(text, FILE)


def decode_error(text: str) -> str:
    with pytest.raises(DicomBqError) as error:
        decoded(text)
    return error.value.message


BASE = "base: &base {a: 1, b: 2}\nmore: &more {b: 3, c: 4}\n"


@pytest.mark.parametrize("merge_key", ["<<", "! <<", "!!merge <<", "!<tag:yaml.org,2002:merge> <<"])
def test_a_merge_key_merges_and_the_keys_written_win(merge_key: str) -> None:
    document = decoded(f"{BASE}this:\n  b: 20\n  {merge_key}: *base\n  z: 26\n")
    assert document["this"] == {"b": 20, "z": 26, "a": 1}
    assert list(document["this"]) == ["b", "z", "a"]


def test_a_quoted_merge_key_merges_once_the_engine_reads_its_file_again() -> None:
    # yaml.v3 keeps '<<' a key, the engine writes it back plain, and the second read merges.
    text = "config:\n  gcp:base: &base {a: 1, b: 2}\n  dicom-bq:labels: {'<<': *base, c: 3}\n"
    assert read(text).values["dicom-bq:labels"] == {"a": 1, "b": 2, "c": 3}


def test_merged_maps_in_a_list_the_first_wins() -> None:
    document = decoded(f"{BASE}this:\n  <<: [*base, *more]\n  d: 5\n")
    assert document["this"] == {"d": 5, "a": 1, "b": 2, "c": 4}


def test_a_merged_map_with_a_number_key_keeps_it_a_number() -> None:
    text = "config:\n  dicom-bq:labels:\n    <<: {1: one, b: two}\n    c: three\n"
    assert read(text).values["dicom-bq:labels"] == {"1": "one", "b": "two", "c": "three"}


@pytest.mark.parametrize("value", ["1", "[1]", "[*base, 1]", "text"])
def test_a_merge_of_something_else_than_maps_is_refused(value: str) -> None:
    assert decode_error(f"{BASE}this:\n  <<: {value}\n") == (
        f"{FILE}: invalid YAML file: yaml: map merge requires map or sequence of maps as the "
        "value (Pulumi reads it the same way)"
    )


# --- yaml.v3: keys ---------------------------------------------------------------------------


def test_two_collection_keys_are_the_same_empty_key_to_yaml_v3() -> None:
    # decode.go compares the keys' Kind and Value, and a collection's Value is "".
    assert decode_error("? [a]\n: 1\n? [b]\n: 2\n") == (
        f'{FILE}: yaml: unmarshal errors:\n  line 3: mapping key "" already defined at line 1'
        "\n(Pulumi refuses a key written twice in one map: keep one of them)"
    )


def test_a_collection_key_is_refused() -> None:
    assert decode_error("? [a]\n: 1\n").startswith(
        f"{FILE}: invalid YAML file: yaml: invalid map key: "
    )


# --- yaml.v3: scalars ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("|-\n  123\n", "123"),
        (">-\n  true\n", "true"),
        ("'1.5'", "1.5"),
        ('"~"', "~"),
        ("123", 123),
        ("!!binary aGVsbG8=", "hello"),
        ("!!binary /w==", "\ufffd"),  # a byte that is not UTF-8
        ("!!float 1", 1.0),
        ("!!float 1.5", 1.5),
        ("!!str 1", "1"),
        ("!!int 1", 1),
    ],
)
def test_a_scalar_is_decoded_as_yaml_v3_decodes_it(text: str, value: Any) -> None:
    got = decoded(f"a: {text}")["a"]
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!binary '@@@@'", "yaml: !!binary value contains invalid base64 data"),
        ("!!bool 1", "yaml: cannot decode !!int `1` as a !!bool"),
        ("!!int 1.5", "yaml: cannot decode !!float `1.5` as a !!int"),
        ("!!int true", "yaml: cannot decode !!bool `true` as a !!int"),
    ],
)
def test_a_scalar_its_tag_refuses_is_refused(text: str, message: str) -> None:
    assert decode_error(f"a: {text}\n") == (
        f"{FILE}: invalid YAML file: {message} (Pulumi reads it the same way)"
    )


# --- keys that are not text, read again as the engine writes them back ----------------------


def test_map_keys_that_are_not_text_are_named_as_go_names_them() -> None:
    text = "config:\n  dicom-bq:labels: {~: a, true: b, false: c, 1.5: d, .inf: e, -.inf: f}\n"
    assert read(text).values["dicom-bq:labels"] == {
        "<nil>": "a",
        "true": "b",
        "false": "c",
        "1.5": "d",
        "+Inf": "e",
        "-Inf": "f",
    }


@pytest.mark.parametrize(
    ("key", "written"),
    [("~", "null"), ("true", "true"), ("false", "false"), ("1.5", "1.5"), (".nan", ".nan")],
)
def test_a_config_key_that_is_not_text_is_refused_as_written_back(key: str, written: str) -> None:
    assert refused(f"config:\n  {key}: x\n") == (
        f"{FILE}: invalid YAML file: could not unmarshal map: could not parse {written} as a "
        "configuration key (configuration keys should be of the form `<namespace>:<name>`)"
    )


@pytest.mark.parametrize(
    "pair", ["~: a, 'null': b", "True: a, 'true': b", "False: a, 'false': b", ".Inf: a, '.inf': b"]
)
def test_keys_written_back_the_same_are_a_duplicate(pair: str) -> None:
    message = refused(f"config:\n  dicom-bq:labels: {{{pair}}}\n")
    assert "mapping key" in message
    assert "already defined (two keys of a map are written the same once read as text)" in message


# --- a `config:` that is not a map: yaml.v3's `line N: cannot unmarshal !!TAG VALUE` ---------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("true", "!!bool `true`"),
        ("false", "!!bool `false`"),
        ("12", "!!int `12`"),
        ("0", "!!int `0`"),
        ("1.5", "!!float `1.5`"),
        ("12.5", "!!float `12.5`"),
        ("0.00125", "!!float `0.00125`"),
        (".inf", "!!float `.inf`"),
        ("-.inf", "!!float `-.inf`"),
        (".nan", "!!float `.nan`"),
        ("2024-01-02", "!!timestamp `2024-01...`"),
        ("abcdefghij", "!!str `abcdefghij`"),
        ("abcdefghijk", "!!str `abcdefg...`"),
        ("[]", "!!seq"),
    ],
)
def test_a_config_that_is_not_a_map_is_refused_with_yaml_v3s_message(
    value: str, shown: str
) -> None:
    assert refused(f"config: {value}\n") == (
        f"{FILE}: invalid YAML file: could not unmarshal map: yaml: unmarshal errors:\n"
        f"  line 1: cannot unmarshal {shown} into map[string]config.Value (the file must hold a "
        "'config:' map of key: value)"
    )


def test_the_line_counts_the_keys_written_back_before_config() -> None:
    message = refused("zeta: 1\nalpha: 1\nbeta: 2\nconfig: hello\n")
    assert "  line 3: cannot unmarshal !!str `hello` into" in message
    message = refused("alpha: 1\nconfig: [a]\n")
    assert "  line 3: cannot unmarshal !!seq into" in message


# --- numbers as the program receives them ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [("12.5", "12.5"), ("123.456", "123.456"), ("0.5", "0.5"), ("0.00125", "0.00125")],
)
def test_a_float_reaches_the_program_as_the_engine_writes_it(value: str, text: str) -> None:
    config = read(f"config:\n  dicom-bq:x: {value}\n  dicom-bq:y: [{value}]\n")
    assert config.values["dicom-bq:x"] == text
    assert config.values["dicom-bq:y"] == [float(text)]
