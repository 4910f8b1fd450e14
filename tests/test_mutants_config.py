"""stack/config.py held to the engine's reading of a project folder (issue 19, mutation testing):
Pulumi.yaml's declarations, the stack file's name, encoding and shape, what the merge keeps, warns
about and refuses (with the engine's whole message), ESC environments read offline and through the
`pulumi` CLI, and the values a program receives. Each test reads a small project folder written
here; tests/test_mutants_config_go.py holds the Go texts, tests/test_mutants_config_secrets.py the
secrets and yaml.v3's decoding, tests/test_pulumi_config.py the repo's own Pulumi.yaml."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicom_bq.errors import DicomBqError
from dicom_bq.stack import config as stack_config
from dicom_bq.stack.config import (
    StackConfig,
    available_stacks,
    find_project_dir,
    read_project,
    read_stack_config,
)

BARE = "name: dicom-bq\nruntime: python\n"
KEY_FORM = "(configuration keys should be of the form `<namespace>:<name>`)"


@pytest.fixture(autouse=True)
def _no_pulumi_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No passphrase, no backend, no `pulumi` on PATH: what the tests set is all there is."""
    for name in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(BARE, encoding="utf-8")
    return project


def declare(folder: Path, block: str) -> None:
    """Pulumi.yaml with this `config:` block (its lines indented by two spaces)."""
    (folder / "Pulumi.yaml").write_text(f"{BARE}config:\n{block}", encoding="utf-8")


def read(folder: Path, text: str, stack: str = "s", use_cli: bool = False) -> StackConfig:
    short = stack.rsplit("/", 1)[-1]
    (folder / f"Pulumi.{short}.yaml").write_text(text, encoding="utf-8")
    return read_stack_config(folder, stack, use_cli=use_cli)


def refusal(folder: Path, text: str, stack: str = "s") -> str:
    with pytest.raises(DicomBqError) as error:
        read(folder, text, stack)
    return error.value.message


def project_refusal(folder: Path) -> str:
    with pytest.raises(DicomBqError) as error:
        read(folder, "config: {}\n")
    return error.value.message


# --- Pulumi.yaml ------------------------------------------------------------------------------


def test_a_missing_pulumi_yaml_is_named(tmp_path: Path) -> None:
    with pytest.raises(DicomBqError) as error:
        read_project(tmp_path)
    assert error.value.message == f"{tmp_path / 'Pulumi.yaml'} does not exist"


@pytest.mark.parametrize(
    "text", ["- name: dicom-bq\n", "name: 5\nruntime: python\n", "runtime: x\n"]
)
def test_a_pulumi_yaml_without_a_name_is_refused(folder: Path, text: str) -> None:
    (folder / "Pulumi.yaml").write_text(text, encoding="utf-8")
    assert project_refusal(folder) == (
        "Pulumi.yaml must be a map with at least `name:` and `runtime:`"
    )


def test_another_project_is_refused_naming_it(folder: Path) -> None:
    (folder / "Pulumi.yaml").write_text("name: other\nruntime: python\n", encoding="utf-8")
    assert project_refusal(folder) == (
        "Pulumi.yaml names project 'other'; dicom-bq reads the 'dicom-bq' project: pass "
        "--project-dir to its folder"
    )


def test_a_pulumi_yaml_that_is_not_yaml_is_named(folder: Path) -> None:
    (folder / "Pulumi.yaml").write_text(f"{BARE}config: [\n", encoding="utf-8")
    assert project_refusal(folder).startswith("Pulumi.yaml is not valid YAML at line 4: ")


def test_each_read_of_the_project_is_its_own_copy(folder: Path) -> None:
    declare(folder, "  zone: {type: string, default: UTC}\n")
    first = read_project(folder)
    first["config"]["zone"]["default"] = "changed"
    assert read_project(folder)["config"]["zone"] == {"type": "string", "default": "UTC"}


def test_a_config_block_that_is_not_a_map_is_refused(folder: Path) -> None:
    (folder / "Pulumi.yaml").write_text(f"{BARE}config: [zone]\n", encoding="utf-8")
    assert project_refusal(folder) == "Pulumi.yaml: `config:` must be a map of key: declaration"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "  gcp:project: {type: string, value: p}\n",
            "Configuration key 'gcp:project' is not namespaced by the project and should not "
            "define a type",
        ),
        (
            "  gcp:project: {default: p}\n",
            "Configuration key 'gcp:project' is not namespaced by the project and should not "
            "define a default value. Did you mean to use the 'value' attribute instead of "
            "'default'?",
        ),
        (
            "  gcp:project: {description: x}\n",
            "Configuration key 'gcp:project' is namespaced and must provide an attribute 'value'",
        ),
        (
            "  zone: {type: string, default: UTC, value: UTC}\n",
            "project config 'zone' cannot have both a 'default' and 'value' attribute",
        ),
        (
            "  tables: {type: array}\n",
            "The configuration key 'tables' declares an array but does not specify the "
            "underlying type via the 'items' attribute",
        ),
        (
            "  flag: {type: boolean, default: maybe}\n",
            "The default value specified for configuration key 'flag' is not of the expected "
            "type 'boolean'",
        ),
        (
            "  count: {type: integer, default: true}\n",
            "The default value specified for configuration key 'count' is not of the expected "
            "type 'integer'",
        ),
        ("  a:b:c: {value: x}\n", f"could not parse a:b:c as a configuration key {KEY_FORM}"),
        (
            "  ratio: {value: .nan}\n",
            "ratio: json: unsupported value: NaN",
        ),
    ],
)
def test_a_declaration_the_engine_refuses_is_refused_with_its_message(
    folder: Path, block: str, message: str
) -> None:
    declare(folder, block)
    assert project_refusal(folder) == f"Pulumi.yaml: {message}"


def test_project_defaults_and_values_reach_the_program_as_the_engine_hands_them(
    folder: Path,
) -> None:
    declare(
        folder,
        "  zone: UTC\n"  # shorthand: a default of this project's key
        "  tags: [a, 1]\n"
        "  gcp:region: europe-west4\n"  # shorthand: a value of another namespace's key
        "  dicom-bq:flag: {type: boolean, default: false}\n"
        "  on: {default: true}\n"
        "  count: {type: integer, default: 5}\n"
        "  high: {default: 9223372036854775807}\n"
        "  low: {default: -9223372036854775808}\n"
        "  huge: {default: 18446744073709551615}\n"
        "  ratio: {default: 1.5}\n"
        "  options: {type: object, default: {k: v, n: 2}}\n"
        "  day: {default: 2024-01-05}\n"
        "  gcp:when: {value: 2024-01-05T10:20:30Z}\n"
        "  gcp:days: {value: [2024-01-05]}\n"
        "  gcp:at: {value: {first: 2024-01-05}}\n",
    )
    assert read(folder, "config: {}\n").values == {
        "dicom-bq:zone": "UTC",
        "dicom-bq:tags": ["a", 1],
        "gcp:region": "europe-west4",
        "dicom-bq:flag": "false",
        "dicom-bq:on": "true",
        "dicom-bq:count": "5",
        "dicom-bq:high": "9223372036854775807",
        "dicom-bq:low": "-9223372036854775808",
        "dicom-bq:huge": 18446744073709552000,  # beyond int64: a JSON number, as a float64
        "dicom-bq:ratio": 1.5,
        "dicom-bq:options": {"k": "v", "n": 2},
        # A project's timestamp is JSON: RFC 3339, not time.Time's String() a stack value gets.
        "dicom-bq:day": "2024-01-05T00:00:00Z",
        "gcp:when": "2024-01-05T10:20:30Z",
        "gcp:days": ["2024-01-05T00:00:00Z"],
        "gcp:at": {"first": "2024-01-05T00:00:00Z"},
    }


def test_a_shorthand_declaration_is_a_default_the_stack_overrides(folder: Path) -> None:
    declare(folder, "  zone: UTC\n  gcp:region: europe-west4\n")
    config = read(folder, "config:\n  zone: Europe/Paris\n  gcp:region: us-east1\n")
    assert config.values == {"dicom-bq:zone": "Europe/Paris", "gcp:region": "us-east1"}


def test_a_required_key_no_one_sets_stops_the_read(folder: Path) -> None:
    declare(folder, "  a: {type: string}\n  b: {type: string}\n  gcp:c: {value: x}\n")
    assert refusal(folder, "config: {}\n", stack="org/proj/s") == (
        "Stack 's' is missing configuration values 'a' and 'b' (Pulumi stops here too): set each "
        "with `pulumi config set dicom-bq:KEY VALUE --stack s`"
    )


# --- types -----------------------------------------------------------------------------------

TYPED = (
    "  count: {type: integer, default: 0}\n"
    "  counts: {type: array, items: {type: integer}, default: []}\n"
    "  aaa: {default: x}\n"  # untyped, and sorted before the typed keys
)


def test_integers_up_to_int64_pass(folder: Path) -> None:
    declare(folder, TYPED)
    config = read(
        folder,
        "config:\n  count: '-9223372036854775808'\n"
        "  counts: [-9223372036854775808, 9223372036854775807, 2.0]\n",
    )
    assert config.own()["count"] == "-9223372036854775808"
    assert config.own()["counts"] == [-9223372036854775808, 9223372036854775807, 2]
    assert read(folder, "config:\n  count: 9223372036854775807\n").own()["count"] == (
        "9223372036854775807"
    )


@pytest.mark.parametrize(
    ("value", "key", "kind"),
    [
        ("count: 9223372036854775808", "count", "integer"),
        ("count: -9223372036854775809", "count", "integer"),
        ("count: {a: 1}", "count", "integer"),
        ("counts: [true]", "counts", "array<integer>"),
        ("counts: [null]", "counts", "array<integer>"),
        ("counts: [9223372036854775808]", "counts", "array<integer>"),
    ],
)
def test_a_value_of_another_type_is_refused(folder: Path, value: str, key: str, kind: str) -> None:
    declare(folder, TYPED)
    assert refusal(folder, f"config:\n  {value}\n") == (
        f"Stack 's' with configuration key '{key}' must be of type '{kind}'"
    )


def test_a_key_declared_secret_must_be_set_as_a_secret(folder: Path) -> None:
    declare(folder, "  aaa: {default: x}\n  secret: {type: string, default: '', secret: true}\n")
    assert refusal(folder, "config:\n  secret: plain\n") == (
        "Stack 's' with configuration key 'secret' must be encrypted as it's secret"
    )
    declare(folder, "  secret: {type: string, default: '', secret: false}\n")
    assert read(folder, "config:\n  secret: plain\n").own() == {"secret": "plain"}


# --- the stack file --------------------------------------------------------------------------


def test_a_stack_under_its_organization_and_project_is_its_short_name(folder: Path) -> None:
    config = read(folder, "config:\n  gcp:x: 1\n", stack="acme/dicom-bq/s")
    assert config.stack == "s"
    assert config.values == {"gcp:x": "1"}
    assert read(folder, "config:\n  gcp:x: 2\n", stack="acme/s").values == {"gcp:x": "2"}


@pytest.mark.parametrize("stack", ["a/b/c/d", "..", ".", "acme/../s", "acme//s", "a b"])
def test_a_stack_name_pulumi_refuses_is_refused(folder: Path, stack: str) -> None:
    with pytest.raises(DicomBqError) as error:
        read_stack_config(folder, stack, use_cli=False)
    assert error.value.message == (
        f"stack name '{stack}' is not valid: use letters, digits, '-', '_' and '.' (optionally "
        "after ORG/PROJECT/)"
    )


def test_a_stack_without_its_file_names_the_stacks_there(folder: Path) -> None:
    with pytest.raises(DicomBqError) as error:
        read_stack_config(folder, "nope", use_cli=False)
    assert error.value.message == (
        f"stack 'nope' has no config file Pulumi.nope.yaml in {folder}: the stacks here are "
        "none; create one with `pulumi stack init nope` and `pulumi config set`"
    )
    for name in ("prod", "dev"):
        (folder / f"Pulumi.{name}.yaml").write_text("", encoding="utf-8")
    with pytest.raises(DicomBqError) as error:
        read_stack_config(folder, "nope", use_cli=False)
    assert "the stacks here are dev, prod; create one" in error.value.message


def test_stack_files_live_in_the_stack_config_dir(folder: Path) -> None:
    (folder / "Pulumi.yaml").write_text(f"{BARE}stackConfigDir: stacks\n", encoding="utf-8")
    (folder / "stacks").mkdir()
    (folder / "stacks" / "Pulumi.b.yaml").write_text("config:\n  gcp:x: b\n", encoding="utf-8")
    (folder / "stacks" / "Pulumi.a.yaml").write_text("", encoding="utf-8")
    (folder / "Pulumi.c.yaml").write_text("", encoding="utf-8")  # not in stackConfigDir
    (folder / "stacks" / "notes.yaml").write_text("", encoding="utf-8")
    assert available_stacks(folder) == ["a", "b"]
    assert read_stack_config(folder, "b", use_cli=False).values == {"gcp:x": "b"}


def test_the_project_folder_is_the_nearest_one_above(folder: Path, monkeypatch: Any) -> None:
    inner = folder / "infra" / "deep"
    inner.mkdir(parents=True)
    assert find_project_dir(inner) == folder.resolve()
    monkeypatch.chdir(inner)
    assert find_project_dir() == folder.resolve()
    (folder / "Pulumi.yaml").unlink()
    with pytest.raises(DicomBqError) as error:
        find_project_dir(inner)
    assert error.value.message == (
        f"no Pulumi.yaml in {inner.resolve()} or above it: run dicom-bq from the dicom-bq "
        "project folder, or pass --project-dir PATH"
    )


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-8"])
def test_a_stack_file_after_a_byte_order_mark_is_read(folder: Path, encoding: str) -> None:
    # Only the mark in front goes: U+FEFF at the end of a value is a character of it.
    text = "\ufeffconfig:\n  gcp:x: été\n  gcp:y: a\ufeff"
    (folder / "Pulumi.s.yaml").write_bytes(text.encode(encoding))
    config = read_stack_config(folder, "s", use_cli=False)
    assert config.values == {"gcp:x": "été", "gcp:y": "a\ufeff"}


def test_a_stack_file_that_is_not_utf8_is_refused(folder: Path) -> None:
    (folder / "Pulumi.s.yaml").write_bytes("config:\n  gcp:x: été\n".encode("latin-1"))
    with pytest.raises(DicomBqError) as error:
        read_stack_config(folder, "s", use_cli=False)
    assert error.value.message == (
        "Pulumi.s.yaml is not UTF-8 text (Pulumi reads YAML as UTF-8, or UTF-16 after a byte "
        "order mark): re-save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("hello\n", "string"),
        ("true\n", "bool"),
        ("2024-01-05\n", "time.Time"),
        ("- a\n", "[]interface {}"),
    ],
)
def test_a_stack_file_that_is_not_a_map_is_refused(folder: Path, text: str, kind: str) -> None:
    assert refusal(folder, text) == (
        f"Pulumi.s.yaml: expected project to be an object, was '{kind}' (a stack file is a map "
        "with a 'config:' map of key: value)"
    )


@pytest.mark.parametrize("name", ["secretsprovider", "encryptedkey", "encryptionsalt"])
@pytest.mark.parametrize(("value", "kind"), [("[a]", "!!seq"), ("{a: b}", "!!map")])
def test_a_secrets_setting_that_is_not_text_is_refused(
    folder: Path, name: str, value: str, kind: str
) -> None:
    assert refusal(folder, f"{name}: {value}\nconfig: {{}}\n") == (
        f"Pulumi.s.yaml: yaml: unmarshal errors:\n  cannot unmarshal {kind} into string "
        f"({name} is a text)"
    )


def test_a_config_that_is_not_a_map_is_refused(folder: Path) -> None:
    assert refusal(folder, "config: [a]\n") == (
        "Pulumi.s.yaml: invalid YAML file: could not unmarshal map: yaml: unmarshal errors:\n"
        "  line 2: cannot unmarshal !!seq into map[string]config.Value (the file must hold a "
        "'config:' map of key: value)"
    )


@pytest.mark.parametrize("text", ["", "config:\n", "config: ~\n", "secretsprovider: ''\n"])
def test_a_stack_file_without_config_takes_the_projects_defaults(folder: Path, text: str) -> None:
    declare(folder, "  zone: UTC\n")
    config = read(folder, text)
    assert (config.values, config.notes, config.environments) == ({"dicom-bq:zone": "UTC"}, [], [])


# --- what the merge keeps and says -----------------------------------------------------------


def test_an_unnamespaced_key_is_the_projects(folder: Path) -> None:
    config = read(folder, "config:\n  zone: UTC\n  gcp:x: y\n")
    assert config.values == {"dicom-bq:zone": "UTC", "gcp:x": "y"}
    assert config.own() == {"zone": "UTC"}


@pytest.mark.parametrize(
    ("nulls", "note"),
    [
        (
            "  zone: null\n",
            'No value for configuration key "dicom-bq:zone". This is currently treated as an '
            'empty string `""`, but will be treated as `null` in a future version of pulumi. '
            'Set the value to `""` to avoid this warning.',
        ),
        (
            "  zone: ~\n  gcp:x:\n",
            'No value for configuration keys "dicom-bq:zone" and "gcp:x". This is currently '
            'treated as an empty string `""`, but will be treated as `null` in a future version '
            'of pulumi. Set the values to `""` to avoid this warning.',
        ),
    ],
)
def test_a_null_value_is_empty_with_the_engines_warning(
    folder: Path, nulls: str, note: str
) -> None:
    config = read(folder, f"config:\n{nulls}  gcp:set: yes\n")
    assert config.notes == [note]
    assert set(config.values.values()) == {"", "yes"}


@pytest.mark.parametrize(
    "keys", [("dicom-bq:config:zone", "dicom-bq:zone"), ("dicom-bq:zone", "dicom-bq:config:zone")]
)
def test_a_key_spelled_two_ways_keeps_the_new_spelling_with_a_note(
    folder: Path, keys: tuple[str, str]
) -> None:
    values = {"dicom-bq:zone": "new", "dicom-bq:config:zone": "old"}
    config = read(folder, "config:\n" + "".join(f"  {key}: {values[key]}\n" for key in keys))
    assert config.values == {"dicom-bq:zone": "new"}
    assert config.notes == [
        f"Pulumi.s.yaml sets dicom-bq:zone 2 times ({', '.join(keys)}): the engine keeps one of "
        "them at random; this reading keeps the one written dicom-bq:zone. Keep one spelling"
    ]


def test_the_old_spelling_takes_any_namespace_and_name(folder: Path) -> None:
    # config.ParseKey: two colons with `config` between them; tokens.ParseModuleMember checks
    # nothing more (pulumi v3.274.0), so the engine keeps these keys.
    config = read(folder, "config:\n  my ns:config:x: 1\n  'a:config:': 2\n  ':config:b': 3\n")
    assert config.values == {"my ns:x": "1", "a:": "2", ":b": "3"}
    assert refusal(folder, "config:\n  dicom-bq:labels:env: dev\n") == (
        "Pulumi.s.yaml: invalid YAML file: could not unmarshal map: could not parse "
        f"dicom-bq:labels:env as a configuration key {KEY_FORM}"
    )


@pytest.mark.parametrize(
    ("key", "shown"),
    [("~", "null"), ("true", "true"), ("false", "false"), ("1.5", "1.5"), (".inf", ".inf")],
)
def test_a_config_key_that_is_not_text_is_refused_as_the_engine_writes_it(
    folder: Path, key: str, shown: str
) -> None:
    assert refusal(folder, f"config:\n  gcp:x: 1\n  {key}: y\n") == (
        f"Pulumi.s.yaml: invalid YAML file: could not unmarshal map: could not parse {shown} as "
        f"a configuration key {KEY_FORM}"
    )


def test_keys_equal_once_written_as_text_are_read_in_order(folder: Path) -> None:
    # 1 and 1.0 are both written "1": the first, in the file's order, is the one refused.
    assert refusal(folder, "config:\n  1: x\n  1.0: [y]\n") == (
        "Pulumi.s.yaml: invalid YAML file: could not unmarshal map: could not parse 1 as a "
        f"configuration key {KEY_FORM}"
    )


def test_a_value_the_engine_cannot_write_back_is_refused_naming_the_key(folder: Path) -> None:
    assert refusal(folder, "config:\n  gcp:x: [1, [.nan]]\n") == (
        "Pulumi.s.yaml: invalid YAML file: could not unmarshal map: json: error calling "
        "MarshalJSON for type config.object: json: error calling MarshalJSON for type "
        "config.object: json: unsupported value: NaN (gcp:x: a number must be finite)"
    )
    assert refusal(folder, "config:\n  gcp:m: {1: a, 1.0: b}\n") == (
        "Pulumi.s.yaml: invalid YAML file: could not unmarshal map: yaml: unmarshal errors:\n"
        '  mapping key "1" already defined (two keys of a map are written the same once read '
        "as text)"
    )


def test_plain_scalars_resolve_as_yaml_v3_resolves_them(folder: Path) -> None:
    config = read(
        folder,
        "config:\n  gcp:dot: .5\n  gcp:arabic: .\u0665\n  gcp:huge: 1e400\n  gcp:word: .abc\n"
        "  gcp:underscores: 1_000\n  gcp:uint: 9223372036854775808\n"
        "  gcp:tagged: !!float .5\n  gcp:day: !!timestamp 2024-01-05\n",
    )
    assert config.values == {
        "gcp:dot": "0.5",
        "gcp:arabic": ".\u0665",  # strconv reads ASCII digits only: text
        "gcp:huge": "1e400",  # out of float64's range: text, not +Inf
        "gcp:word": ".abc",
        "gcp:underscores": "1000",
        "gcp:uint": "9223372036854775808",  # ParseUint's, not a float's 9223372036854775808
        "gcp:tagged": "0.5",
        "gcp:day": "2024-01-05 00:00:00 +0000 UTC",
    }


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        ("!!bool yes", "!!str `yes`"),
        ("!!int 12abc", "!!str `12abc`"),
        ("!!int .abc", "!!str `.abc`"),
        ("!!int .5", "!!float `.5`"),
    ],
)
def test_a_tag_its_scalar_does_not_resolve_to_is_refused(
    folder: Path, value: str, resolved: str
) -> None:
    kind = value.split()[0]
    assert refusal(folder, f"config:\n  gcp:x: {value}\n") == (
        f"Pulumi.s.yaml: invalid YAML file: yaml: cannot decode {resolved} as a {kind} (Pulumi "
        "reads it the same way)"
    )


def test_text_keys_beside_number_keys_stay_as_written(folder: Path) -> None:
    config = read(folder, "config:\n  gcp:m: {1: a, '007': b, 'true': c, '~': d}\n")
    assert config.values == {"gcp:m": {"1": "a", "007": "b", "true": "c", "~": "d"}}


def test_values_reach_the_program_as_text_or_decoded_json(folder: Path) -> None:
    config = read(
        folder,
        "config:\n  gcp:no: false\n  gcp:yes: true\n  gcp:flags: [true, false]\n"
        "  gcp:m: {a: [1, {b: false}]}\n",
    )
    assert config.values == {
        "gcp:no": "false",
        "gcp:yes": "true",
        "gcp:flags": [True, False],
        "gcp:m": {"a": [1, {"b": False}]},
    }


def test_a_secret_of_another_namespace_is_left_with_a_note(folder: Path) -> None:
    config = read(
        folder, "config:\n  gcp:s: {secure: v1:AAAA:AAAA}\n  aws:t: {secure: v1:AAAA:AAAA}\n"
    )
    assert config.values == {}
    assert config.notes == [
        "Pulumi.s.yaml holds secrets of other namespaces (aws:t, gcp:s), not decrypted offline "
        "(the stack has no `encryptionsalt:`: its secrets are the Pulumi Cloud's)"
    ]


def test_the_first_secret_of_the_project_is_named(folder: Path) -> None:
    assert refusal(
        folder, "config:\n  zone: {secure: v1:AAAA:AAAA}\n  area: {secure: v1:AAAA:AAAA}\n"
    ) == (
        "dicom-bq:area in Pulumi.s.yaml is a secret, which cannot be read offline here (the "
        "stack has no `encryptionsalt:`: its secrets are the Pulumi Cloud's): dicom-bq settings "
        "hold no secrets, store it in plain text"
    )


def test_a_secret_on_a_fresh_salt_is_named_with_its_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file://~")
    assert refusal(folder, "config:\n  gcp:s: {secure: 'v1:AAAAAAAAAAAAAAAA:AAAA'}\n") == (
        "Pulumi.s.yaml: a secret (`secure:`) cannot be decrypted: cipher: message "
        "authentication failed"
    )


@pytest.mark.parametrize(
    "value",
    ["{a: {secure: 'v1:AAAAAAAAAAAAAAAA:AAAA'}}", "[x, {secure: 'v1:AAAAAAAAAAAAAAAA:AAAA'}]"],
)
def test_a_secret_inside_a_value_is_decrypted_too(
    folder: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file://~")  # a fresh salt: nothing decrypts
    assert refusal(folder, f"config:\n  gcp:m: {value}\n") == (
        "Pulumi.s.yaml: a secret (`secure:`) cannot be decrypted: cipher: message "
        "authentication failed"
    )


def seal(key: bytes, plaintext: bytes) -> str:
    """symmetricCrypter.EncryptValue's v1:NONCE:SEALED."""
    nonce = bytes(range(12))
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"


def test_decrypted_secrets_reach_the_program_and_satisfy_secret_keys(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One PBKDF2 round instead of the engine's million: the same derivation, milliseconds.
    monkeypatch.setattr(stack_config, "PASSPHRASE_ITERATIONS", 1)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "phrase")
    salt = b"8bytes!!"
    key = hashlib.pbkdf2_hmac("sha256", b"phrase", salt, 1, 32)
    state = f"v1:{base64.b64encode(salt).decode()}:{seal(key, b'pulumi')}"
    declare(
        folder, "  token: {type: string, secret: true}\n  creds: {type: object, secret: true}\n"
    )
    config = read(
        folder,
        f"encryptionsalt: {state}\nconfig:\n"
        f"  token: {{secure: '{seal(key, b't0ken')}'}}\n"
        f"  creds: {{user: {{secure: '{seal(key, b'alice')}'}}, port: 5}}\n"
        f"  gcp:list: [plain, {{secure: '{seal(key, b'hidden')}'}}]\n",
    )
    assert config.values == {
        "dicom-bq:token": "t0ken",
        "dicom-bq:creds": {"user": "alice", "port": 5},
        "gcp:list": ["plain", "hidden"],
    }


# --- ESC environments ------------------------------------------------------------------------

ESC_NOTE = (
    "stack 's' imports Pulumi ESC environment(s) {names}, which only a logged-in `pulumi` CLI "
    "can open: values they set are not shown here"
)


@pytest.mark.parametrize(
    ("environment", "names"),
    [
        ("[img/prod, img/shared]", ["img/prod", "img/shared"]),
        ("{imports: [img/prod]}", ["img/prod"]),
        ("{values: {a: 1}}", ["(inline environment)"]),
        ("{imports: [], values: {a: 1}}", ["(inline environment)"]),
        ("img/prod", ["img/prod"]),
    ],
)
def test_esc_environments_are_named_offline(
    folder: Path, environment: str, names: list[str]
) -> None:
    config = read(folder, f"environment: {environment}\nconfig:\n  gcp:x: y\n")
    assert config.environments == names
    assert config.notes == [ESC_NOTE.format(names=", ".join(names))]
    assert not config.resolved_by_cli


def test_keys_an_environment_may_set_are_not_missing(folder: Path) -> None:
    declare(folder, "  a: {type: string}\n  b: {type: boolean}\n  c: {type: string}\n")
    config = read(folder, "environment: [e]\nconfig:\n  c: x\n  gcp:n: null\n")
    assert config.own() == {"c": "x"}
    assert config.notes[0] == (ESC_NOTE.format(names="e") + ", and 'a' and 'b' may come from them")
    assert config.notes[1].startswith('No value for configuration key "gcp:n".')
    # The keys set in the file are still checked.
    assert refusal(folder, "environment: [e]\nconfig:\n  b: maybe\n") == (
        "Stack 's' with configuration key 'b' must be of type 'boolean'"
    )


# --- ESC environments through the `pulumi` CLI -----------------------------------------------

CLI_PROJECT = (
    "  tables: {type: array, items: {type: string}, default: []}\n"
    "  options: {type: object, default: {}}\n"
    "  broken: {type: array, items: {type: string}, default: []}\n"
    "  deep: {type: object, default: {}}\n"
    "  zone: {type: string, default: UTC}\n"
    "  plain: {default: x}\n"
)
ESC_STACK = "environment: [img/prod, img/shared]\nconfig:\n  zone: here\n"
ARGUMENTS = "--non-interactive config --show-secrets --json --stack esc"


def fake_pulumi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdout: bytes, stderr: str = "", code: int = 0
) -> Path:
    """A `pulumi` on PATH that answers this and writes down where and how it was run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "out").write_bytes(stdout)
    (tmp_path / "err").write_text(stderr, encoding="utf-8")
    log = tmp_path / "calls.log"
    script = bin_dir / "pulumi"
    script.write_text(
        f'#!/bin/sh\necho "$(pwd -P)|$*" >> {log}\n/bin/cat {tmp_path / "err"} >&2\n'
        f"/bin/cat {tmp_path / 'out'}\nexit {code}\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def test_the_cli_answers_the_whole_config(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare(folder, CLI_PROJECT)
    answer = {
        "dicom-bq:tables": {"value": '["a"]', "secret": False},
        "dicom-bq:options": {"value": '{"k": 1}'},
        "dicom-bq:labels": {"value": '{"env": "esc"}'},
        "dicom-bq:zone": {"value": '["kept", "as text"]'},
        "dicom-bq:broken": {"value": "[not json"},
        "dicom-bq:deep": {"value": "[" * 101 + "]" * 101},
        "dicom-bq:empty": {"value": None},
        "dicom-bq:absent": {},
        "gcp:project": {"value": "p", "secret": True},
    }
    log = fake_pulumi(monkeypatch, tmp_path, json.dumps(answer).encode())
    config = read(folder, ESC_STACK, stack="esc", use_cli=True)
    assert config == StackConfig(
        stack="esc",
        values={
            "dicom-bq:tables": ["a"],
            "dicom-bq:options": {"k": 1},
            "dicom-bq:labels": {"env": "esc"},
            "dicom-bq:zone": '["kept", "as text"]',
            "dicom-bq:broken": "[not json",
            "dicom-bq:deep": "[" * 101 + "]" * 101,
            "dicom-bq:empty": "",
            "dicom-bq:absent": "",
            "gcp:project": "p",
        },
        environments=["img/prod", "img/shared"],
        notes=["config read with `pulumi config`, environments img/prod, img/shared"],
        resolved_by_cli=True,
    )
    assert log.read_text(encoding="utf-8") == f"{folder.resolve()}|{ARGUMENTS}\n"


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "why"),
    [
        (
            b"",
            "error: could not open environment:\n  zeroth\n  first\n  img/prod: not found\n"
            "  Details:\n",
            1,
            "img/prod: not found",
        ),
        (b"", "x" * 250, 2, "x" * 200),
        (b"", "error:\n", 7, "exit code 7"),
        (b"not json", "", 0, "it did not answer a JSON object of config values"),
        (b"[1]", "", 0, "it did not answer a JSON object of config values"),
        (b'{"a": "b"}', "", 0, "it did not answer a JSON object of config values"),
        (b'{"a": {"value": "\xff"}}', "", 0, "it did not answer a JSON object of config values"),
    ],
)
def test_a_cli_that_cannot_answer_leaves_the_offline_reading_with_a_note(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stdout: bytes,
    stderr: str,
    code: int,
    why: str,
) -> None:
    declare(folder, CLI_PROJECT)
    offline = read(folder, ESC_STACK, stack="esc")
    fake_pulumi(monkeypatch, tmp_path, stdout, stderr, code)
    config = read(folder, ESC_STACK, stack="esc", use_cli=True)
    assert config == dataclasses.replace(
        offline,
        notes=[
            *offline.notes,
            f"`pulumi config` could not open them ({why}); run `pulumi login` to see the whole "
            "config",
        ],
    )


def test_without_environments_or_when_told_not_to_the_cli_is_not_asked(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_pulumi(monkeypatch, tmp_path, b"{}")
    assert read(folder, "config:\n  gcp:x: y\n", use_cli=True).values == {"gcp:x": "y"}
    assert not read(folder, ESC_STACK, stack="esc", use_cli=False).resolved_by_cli
    assert not log.exists()
