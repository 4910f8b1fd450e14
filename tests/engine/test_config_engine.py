"""The offline config reading (`dicom_bq.stack.config`, what `dicom-bq plan` uses) against the real
engine, on a corpus of stack files (tests/engine/config_corpus, see its README).

For each corpus file the engine is the oracle: a throwaway project with this project's
Pulumi.yaml (same config schema; a variant folder adds declarations) runs a tiny program that
only writes down the config the engine hands it (`pulumi.runtime.get_config_env()`, the
PULUMI_CONFIG the language host sets), under `pulumi preview`. Then:
- the engine accepts the file (preview exits 0) exactly when the offline reading does;
- when it accepts, every merged key and value is the same (JSON object values compared decoded,
  numbers by type), and the engine's warnings (a null value) are among the reading's notes;
- when it refuses, the engine's message (after `error: getting stack configuration: ` or
  `error: validating stack config: `) is in the offline reading's message.

The corpus runs two previews at a time (two threads, or two pytest-xdist workers); the engine's
wall time is printed at the end (`-s`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicom_bq.errors import DicomBqError
from dicom_bq.stack.config import read_stack_config
from tests.engine.harness import COMMAND_TIMEOUT, ROOT, EngineUnavailable, engine_env

pytestmark = pytest.mark.engine

CORPUS = Path(__file__).parent / "config_corpus"
# The corpus's `secure:` values were encrypted with this passphrase (see the README).
PASSPHRASE = "dicom-bq-config-corpus"
WORKERS = 2
# The program the engine runs: it registers nothing and writes down the config it was given.
PROGRAM = """\
import json
import os

import pulumi
from pulumi.runtime.config import get_config_env, get_config_secret_keys_env

with open(os.path.join(os.environ["CONFIG_CORPUS_OUT"], pulumi.get_stack() + ".json"), "w") as f:
    json.dump({"config": get_config_env(), "secret_keys": sorted(get_config_secret_keys_env())}, f)
"""
# `pulumi preview`'s error line, before the engine's own message.
_PREFIXES = ("getting stack configuration: ", "validating stack config: ")


@dataclass(frozen=True)
class Case:
    """One corpus file: the stack `name` of project variant `variant` ("" for the project's own
    Pulumi.yaml)."""

    variant: str
    name: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.variant}/{self.name}" if self.variant else self.name


@dataclass
class Verdict:
    """What the engine did with one stack file (previewed as stack `stack`)."""

    stack: str
    exit_code: int
    stderr: str
    config: dict[str, str] | None
    error: str = ""
    warnings: list[str] = field(default_factory=list)


def corpus() -> list[Case]:
    """The corpus files, and the project's own example stacks (as `example-<stack>`)."""
    cases = [Case("", p.stem, p) for p in sorted(CORPUS.glob("*.yaml"))]
    cases += [
        Case("", f"example-{p.name[len('Pulumi.') : -len('.yaml')]}", p)
        for p in sorted(ROOT.glob("Pulumi.*.yaml"))
    ]
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        cases += [
            Case(folder.name, p.stem, p)
            for p in sorted(folder.glob("*.yaml"))
            if p.name != "project-config.yaml"
        ]
    return cases


CASES = corpus()


def project_yaml(variant: str) -> str:
    """This project's Pulumi.yaml running the recording program, with the variant's extra
    declarations (`<variant>/project-config.yaml`, merged into `config:`)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    project["main"] = "program/"
    project["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
    if variant:
        extra = yaml.safe_load((CORPUS / variant / "project-config.yaml").read_text("utf-8"))
        project["config"].update(extra)
    return yaml.safe_dump(project, sort_keys=False, allow_unicode=True)


def _messages(stderr: str, kind: str) -> list[str]:
    """The `kind: ...` diagnostics of the CLI, each with its continuation lines."""
    found: list[str] = []
    current: list[str] | None = None
    for line in stderr.splitlines():
        if line.startswith(f"{kind}: "):
            current = [line[len(kind) + 2 :]]
            found.append("")
        elif current is not None and line.strip() and not re.match(r"[a-z]+: ", line):
            current.append(line)
        else:
            current = None
        if current is not None:
            found[-1] = "\n".join(current)
    return found


def engine_message(error: str) -> str:
    for prefix in _PREFIXES:
        if error.startswith(prefix):
            return error[len(prefix) :]
    return error


class EngineRun:
    """The corpus under the real engine, once: WORKERS stacks per project variant (`corpus-0`,
    `corpus-1`, `typed-0`...), each previewing one corpus file after another (a preview changes
    no state; the stack file is written afresh before each)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        (root / "state").mkdir(parents=True, exist_ok=True)
        self.env = {**env, "PULUMI_BACKEND_URL": f"file://{root / 'state'}"}
        self.verdicts: dict[str, Verdict] = {}
        self.seconds = 0.0
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in range(WORKERS):
            self.slots.put(slot)
        self.initialized: set[tuple[str, int]] = set()

    def project(self, variant: str) -> Path:
        folder = self.root / "engine" / (variant or "project")
        if not folder.exists():
            (folder / "program").mkdir(parents=True)
            (folder / "program" / "__main__.py").write_text(PROGRAM, encoding="utf-8")
            (folder / "Pulumi.yaml").write_text(project_yaml(variant), encoding="utf-8")
            (folder / "out").mkdir()
        return folder

    def pulumi(self, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=folder,
            env={**self.env, "CONFIG_CORPUS_OUT": str(folder / "out")},
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )

    def run(self, case: Case) -> Verdict:
        slot = self.slots.get()
        try:
            return self.run_in(case, slot)
        finally:
            self.slots.put(slot)

    def run_in(self, case: Case, slot: int) -> Verdict:
        folder = self.project(case.variant)
        stack = f"{case.variant or 'corpus'}-{slot}"  # one backend: a name per variant
        if (case.variant, slot) not in self.initialized:
            created = self.pulumi(folder, "stack", "init", stack)
            if created.returncode != 0:
                raise AssertionError(f"pulumi stack init {stack}: {created.stderr}")
            self.initialized.add((case.variant, slot))
        written = folder / "out" / f"{stack}.json"
        written.unlink(missing_ok=True)
        # The corpus file, byte for byte (the engine may rewrite it: a salt it mints).
        shutil.copyfile(case.path, folder / f"Pulumi.{stack}.yaml")
        done = self.pulumi(folder, "preview", "--stack", stack)
        config = None
        if written.exists():
            config = json.loads(written.read_text(encoding="utf-8"))["config"]
        errors = _messages(done.stderr, "error")
        return Verdict(
            stack=stack,
            exit_code=done.returncode,
            stderr=done.stderr,
            config=config,
            error=errors[0] if errors else "",
            warnings=_messages(done.stderr, "warning"),
        )

    def run_all(self, cases: list[Case]) -> None:
        """Run `cases`, WORKERS at a time."""
        started = time.monotonic()
        for variant in sorted({case.variant for case in cases}):
            self.project(variant)
        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {case.id: pool.submit(self.run, case) for case in cases}
            self.verdicts.update({name: future.result() for name, future in futures.items()})
        self.seconds += time.monotonic() - started

    def verdict(self, case: Case) -> Verdict:
        """The engine's verdict on `case`, run now if it was not run with the others."""
        if case.id not in self.verdicts:
            self.run_all([case])
        return self.verdicts[case.id]

    def report(self) -> None:
        print(
            f"\nconfig corpus: {len(self.verdicts)} stack files under the real engine in "
            f"{self.seconds:.1f} s"
        )
        report = os.environ.get("CONFIG_CORPUS_VERDICTS")
        if report:  # for a person comparing runs: what the engine said, case by case
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            Path(f"{report}.{worker}" if worker else report).write_text(
                json.dumps({k: dataclasses.asdict(v) for k, v in self.verdicts.items()}, indent=1),
                encoding="utf-8",
            )


@pytest.fixture(scope="module")
def engine_run(request: pytest.FixtureRequest) -> Iterator[EngineRun]:
    """The engine's verdicts. In one process, every case this session runs is run first, WORKERS
    at a time; under pytest-xdist (each worker gets some of the cases, and the workers are the
    parallelism), each case is run when its test asks."""
    try:
        env = engine_env()
    except EngineUnavailable as error:
        pytest.skip(f"the real Pulumi engine cannot be built here: {error}")
    env = {
        **env,
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    with tempfile.TemporaryDirectory(prefix="config-corpus-") as where:
        root = Path(where)
        env["PULUMI_HOME"] = str(root / "home")  # the CLI's own files, not the shared home's
        run = EngineRun(root, env)
        if "PYTEST_XDIST_WORKER" not in os.environ:
            # The cases this session runs (all of them, unless -k or node ids chose some).
            chosen = {
                item.callspec.params["case"].id: item.callspec.params["case"]
                for item in request.session.items
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)
            }
            run.run_all(list(chosen.values()))
        yield run
        run.report()


@pytest.fixture
def offline_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the offline reading runs: the same Pulumi.yaml, the same passphrase, a DIY backend
    (the engine run's: its default secrets provider is the passphrase)."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'state'}")
    return tmp_path


def typed_equal(left: Any, right: Any) -> bool:
    """Equal, and of the same JSON type at every level (1 is not 1.0 nor true)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(typed_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(typed_equal, left, right))
    return bool(left == right)


def value_differences(engine: dict[str, str], offline: dict[str, Any]) -> list[str]:
    differences = [f"{k}: only the engine has it" for k in sorted(engine.keys() - offline.keys())]
    differences += [
        f"{k}: only the offline reading has it" for k in sorted(offline.keys() - engine.keys())
    ]
    for key in sorted(engine.keys() & offline.keys()):
        mine = offline[key]
        if isinstance(mine, (dict, list)):
            try:
                theirs: Any = json.loads(engine[key])
            except ValueError:
                theirs = engine[key]
            same = typed_equal(theirs, mine)
        else:
            same = engine[key] == mine
        if not same:
            differences.append(f"{key}: engine {engine[key]!r}, offline {mine!r}")
    return differences


def _normalized(message: str) -> str:
    return " ".join(message.split())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_offline_reading_agrees_with_the_engine(
    case: Case, engine_run: EngineRun, offline_dir: Path
) -> None:
    verdict = engine_run.verdict(case)
    (offline_dir / "Pulumi.yaml").write_text(project_yaml(case.variant), encoding="utf-8")
    shutil.copyfile(case.path, offline_dir / f"Pulumi.{verdict.stack}.yaml")
    try:
        offline = read_stack_config(offline_dir, verdict.stack, use_cli=False)
        refused = None
    except DicomBqError as error:
        offline, refused = None, error.message
    engine_said = f"engine exit {verdict.exit_code}:\n{verdict.stderr[-3000:]}"
    if verdict.exit_code != 0:
        assert refused is not None, f"the engine refuses {case.id}, offline accepts; {engine_said}"
        expected = engine_message(verdict.error)
        assert expected, engine_said
        assert _normalized(expected) in _normalized(refused), (
            f"the engine's message is not in the offline one:\nengine:  {expected}\n"
            f"offline: {refused}"
        )
        return
    assert offline is not None, f"the engine accepts {case.id}, offline refuses: {refused}"
    assert verdict.config is not None, f"the program wrote nothing; {engine_said}"
    assert value_differences(verdict.config, offline.values) == []
    for warning in verdict.warnings:
        keys = sorted(re.findall(r'"([^"]+)"', warning.split(".", 1)[0]))
        assert any(
            sorted(re.findall(r'"([^"]+)"', note.split(".", 1)[0])) == keys
            and _normalized(note.split(".", 1)[1]) == _normalized(warning.split(".", 1)[1])
            for note in offline.notes
        ), f"the engine's warning is not among the notes:\n{warning}\nnotes: {offline.notes}"


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    for case in CASES:
        if case.name.startswith("example-"):
            continue
        data = case.path.read_bytes()
        text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
        assert not text or text.startswith("# "), (
            f"{case.id}: a corpus file starts with a comment saying what it exercises"
        )
