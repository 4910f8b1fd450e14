"""The mutation gate on the safety core (issue 19), run by `scripts/mutation [MODULE...]`.

For each module of tests/mutation_targets.toml, mutmut (3.x) mutates that one module and runs,
against each mutant, the module's own tests that execute the mutated function. It runs in a work
directory per module, build/mutation/<module>/, never in the project's tree, so the code others
run is never mutated: mutmut imports the package from mutants/src/ (its layout for a source
root; ours is scripts/), and the tests read the project's files (Pulumi*.yaml, policy/, the
README) from copies beside them.

Each mutant ends killed (a test failed), timeout (counted as killed: the tests noticed),
survived, or no tests (no listed test runs its function; counted as survived). A survivor is
explained when tests/mutation_explained.toml has an entry with its function and its change (the
lines it alters, so an entry goes stale when the code does); the score is killed over the
mutants not explained, and the gate is `threshold` of that on every module run. Each module's
figures go to build/mutation/<module>.json; build/mutation/survivors.txt lists every survivor
of the modules measured, unexplained ones first, with its diff.

`scripts/mutation --report` prints the table from the stored results without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "tests" / "mutation_targets.toml"
EXPLAINED = ROOT / "tests" / "mutation_explained.toml"
OUT = ROOT / "build" / "mutation"
PACKAGE = ROOT / "scripts" / "dicom_bq"
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
# What the tests read beside them (tests/inventory.py's ROOT is the directory above tests/).
NOT_COPIED = {
    ".git",
    ".venv",
    ".venv-policy",
    "build",
    "dist",
    "mutants",
    "pyproject.toml",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
}
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
UNDETECTED = {"survived", "no tests", "suspicious"}


@dataclass
class Explanation:
    mutant: str
    change: list[str]
    reason: str

    @property
    def function(self) -> str:
        return self.mutant.partition("__mutmut_")[0]


@dataclass
class Outcome:
    module: str
    date: str
    seconds: float
    counts: dict[str, int]
    survivors: list[dict[str, Any]] = field(default_factory=list)
    explained: list[dict[str, Any]] = field(default_factory=list)
    stale_explanations: list[str] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(self.counts.get(status, 0) for status in DETECTED)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unchecked(self) -> int:
        """Mutants an interrupted run did not reach: in no figure."""
        return self.counts.get("not checked", 0)

    @property
    def score(self) -> float:
        counted = self.total - len(self.explained) - self.unchecked
        return self.killed / counted if counted else 1.0


def load_targets() -> tuple[float, dict[str, list[str]]]:
    data = tomllib.loads(TARGETS.read_text(encoding="utf-8"))
    targets: dict[str, list[str]] = {}
    for module, entry in data["targets"].items():
        tests = list(entry["tests"])
        tests += [own for own in own_tests(module) if own not in tests]
        missing = [test for test in tests if not (ROOT / test.partition("::")[0]).exists()]
        if missing:
            raise SystemExit(f"{TARGETS.name}: {module}: no such test file: {', '.join(missing)}")
        if not module_path(module).exists():
            raise SystemExit(f"{TARGETS.name}: no module {module} ({module_path(module)})")
        for test in entry.get("deselect", []):
            tests += ["--deselect", test]
        targets[module] = tests
    return float(data["threshold"]), targets


def own_tests(module: str) -> list[str]:
    """The tests written to kill the module's survivors: tests/test_mutants_<last part>.py and
    any tests/test_mutants_<last part>_<topic>.py (one file per topic keeps the edits apart)."""
    last = module.rpartition(".")[2]
    found = [ROOT / "tests" / f"test_mutants_{last}.py"]
    found += sorted((ROOT / "tests").glob(f"test_mutants_{last}_*.py"))
    return [str(path.relative_to(ROOT)) for path in found if path.exists()]


def load_explained() -> list[Explanation]:
    """tests/mutation_explained.toml and any tests/mutation_explained_<topic>.toml beside it."""
    explained = []
    for path in [EXPLAINED, *sorted(EXPLAINED.parent.glob("mutation_explained_*.toml"))]:
        if not path.exists():
            continue
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        explained += [
            Explanation(
                mutant=entry["mutant"], change=list(entry["change"]), reason=entry["reason"]
            )
            for entry in data.get("explained", [])
        ]
    return explained


def module_path(module: str) -> Path:
    return PACKAGE / (module.replace(".", "/") + ".py")


def source_in_work(module: str) -> str:
    return "src/dicom_bq/" + module.replace(".", "/") + ".py"


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def prepare(module: str, tests: list[str], resume: bool) -> Path:
    """A fresh work directory (or, resuming, the last one with its verdicts): the package as src/dicom_bq, links to what the tests read, and a
    pyproject.toml whose pytest settings are the project's without xdist (mutmut runs each
    mutant's tests in one process) plus the [tool.mutmut] section for this module."""
    work = OUT / module
    copied = sorted(entry.name for entry in ROOT.iterdir() if entry.name not in NOT_COPIED)
    if resume and (work / "mutants").exists():
        (work / "pyproject.toml").unlink()
    else:
        if work.exists():
            shutil.rmtree(work)
        (work / "src").mkdir(parents=True)
        shutil.copytree(
            PACKAGE, work / "src" / "dicom_bq", ignore=shutil.ignore_patterns("__pycache__")
        )
        for name in copied:
            (work / name).symlink_to(ROOT / name)
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project, replaced = re.subn(r'^(addopts = ".*?)-n auto ', r"\1", project, flags=re.MULTILINE)
    if replaced != 1:
        raise SystemExit("pyproject.toml: the pytest addopts no longer hold `-n auto `")
    project = re.sub(r"^\[tool\.mutmut\].*?(?=^\[(?!tool\.mutmut))", "", project, flags=re.M | re.S)
    project += f"""
[tool.mutmut]
source_paths = ["src/dicom_bq"]
only_mutate = [{json.dumps(source_in_work(module))}]
also_copy = {toml_list(copied)}
pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:randomly", "-p", "tests.mutation_plugin"]
pytest_add_cli_args_test_selection = {toml_list(tests)}
use_git_change_detection = false
# A mutant that hangs (a Pulumi Output that never resolves) waits out this wall time:
# (its tests' time + constant) * multiplier, instead of mutmut's 15x: a survivor's tests take
# their time plus about a second.
timeout_multiplier = 2.0
timeout_constant = 3.0
# Each mutant's tests run in a process forked from a server that has only collected the tests:
# nothing the clean run cached (tests/conftest.py's plans, say) reaches a mutant.
process_isolation = "forkserver"
"""
    (work / "pyproject.toml").write_text(project, encoding="utf-8")
    return work


def changed_lines(diff: str) -> list[str]:
    return [
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def collect(module: str, work: Path, seconds: float, explained: list[Explanation]) -> Outcome:
    """Reads mutmut's verdicts from the work directory (its .meta file) and the survivors'
    diffs, and sorts survivors into explained and not."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    here = Path.cwd()
    os.chdir(work)
    try:
        reset_config()
        data = SourceFileMutationData(path=source_in_work(module))
        data.load()
        counts: dict[str, int] = {}
        outcome = Outcome(module, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), seconds, counts)
        by_function: dict[str, list[Explanation]] = {}
        for entry in explained:
            by_function.setdefault(entry.function, []).append(entry)
        used: set[int] = set()
        for name, code in sorted(
            data.exit_code_by_key.items(), key=lambda item: mutant_order(item[0])
        ):
            status = status_by_exit_code[code]
            counts[status] = counts.get(status, 0) + 1
            if status not in UNDETECTED:
                continue
            diff = get_diff_for_mutant(name, path=source_in_work(module))
            change = changed_lines(diff)
            function = name.partition("__mutmut_")[0]
            match = next(
                (
                    e
                    for e in by_function.get(function, [])
                    if e.change == change and id(e) not in used
                ),
                None,
            )
            record = {"mutant": name, "status": status, "change": change, "diff": diff}
            if match is None:
                outcome.survivors.append(record)
                stale = [e.mutant for e in by_function.get(function, []) if e.mutant == name]
                outcome.stale_explanations.extend(stale)
            else:
                used.add(id(match))
                outcome.explained.append({**record, "reason": match.reason})
        return outcome
    finally:
        reset_config()
        os.chdir(here)


def mutant_order(name: str) -> tuple[str, int]:
    function, _, number = name.partition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def run_module(
    module: str, tests: list[str], max_children: int, verbose: bool, resume: bool
) -> Outcome:
    work = prepare(module, tests, resume)
    log = work / "mutmut.log"
    started = time.monotonic()
    command = ["nice", "-n", "10", str(MUTMUT), "run", "--max-children", str(max_children)]
    files = [test for test in tests if test.endswith(".py")]
    print(f"{module}: mutmut in {work.relative_to(ROOT)} ({len(files)} test files)", flush=True)
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.run(
            command,
            cwd=work,
            stdout=None if verbose else out,
            stderr=subprocess.STDOUT if not verbose else None,
            check=False,
        )
    seconds = time.monotonic() - started
    if process.returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        lines = [line for line in text.splitlines() if line.strip() and line[0] not in SPINNER]
        raise SystemExit(
            f"{module}: mutmut failed ({process.returncode}); {log}:\n"
            + "\n".join(lines[-40:])
            + f"\n(a test failing on the unmutated code: run pytest in {work}/mutants to see it)"
        )
    outcome = collect(module, work, seconds, load_explained())
    write_outcome(outcome)
    return outcome


def retest(module: str, max_children: int) -> Outcome:
    """Runs tests/test_mutants_<module>.py, as it is now, against each survivor of the module's
    last run, as mutmut does (the mutant named in MUTANT_UNDER_TEST, the package from
    mutants/src): a survivor it fails is killed. The module's other tests need no rerun: the
    survivor passed them. `scripts/mutation MODULE` remeasures from scratch."""
    from mutmut.configuration import reset_config
    from mutmut.mutation.data import SourceFileMutationData

    work = OUT / module
    own = own_tests(module)
    previous = stored(module)
    if previous is None or not (work / "mutants").exists():
        raise SystemExit(f"{module}: no run to retest; run scripts/mutation {module} first")
    if not own:
        raise SystemExit(f"{module}: no tests/test_mutants_*.py of it to retest with")
    shutil.copytree(
        ROOT / "tests",
        work / "mutants" / "tests",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    started = time.monotonic()
    here = Path.cwd()
    os.chdir(work)
    try:
        reset_config()
        data = SourceFileMutationData(path=source_in_work(module))
        data.load()
        survivors = [name for name, code in data.exit_code_by_key.items() if code in (0, 33)]
        killed = 0

        # tests/mutation_retest.py imports once and forks per mutant, as mutmut does.
        chunks = [survivors[i::max_children] for i in range(max_children)]
        workers = [
            subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "tests/mutation_retest.py", *own, "120"],
                cwd=work / "mutants",
                env={**os.environ, "PYTHONPATH": "src:."},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for chunk in chunks
            if chunk
        ]
        answers = [
            worker.communicate("\n".join(chunk) + "\n")[0]
            for worker, chunk in zip(workers, [c for c in chunks if c], strict=True)
        ]
        if any(worker.returncode != 0 for worker in workers):
            raise SystemExit(
                f"{module}: {' + '.join(own)} fail on the unmutated code, or a worker did"
            )
        for answer in answers:
            for line in answer.splitlines():
                code_text, _, name = line.partition(" ")
                if name not in data.exit_code_by_key:
                    continue  # pytest's own output of the warm-up collection
                code = int(code_text)
                if code not in (0, 1, 36):
                    raise SystemExit(f"{module}: {' + '.join(own)} under {name}: pytest {code}")
                if code != 0:
                    data.exit_code_by_key[name] = code
                    killed += 1
        data.save()
    finally:
        reset_config()
        os.chdir(here)
    outcome = collect(module, work, previous.seconds, load_explained())
    print(
        f"{module}: {' + '.join(own)} killed {killed} of {len(survivors)} survivors in "
        f"{time.monotonic() - started:.0f} s",
        flush=True,
    )
    write_outcome(outcome)
    return outcome


def write_outcome(outcome: Outcome) -> None:
    (OUT / f"{outcome.module}.json").write_text(
        json.dumps(outcome.__dict__ | {"score": outcome.score}, indent=2) + "\n", encoding="utf-8"
    )


def stored(module: str) -> Outcome | None:
    path = OUT / f"{module}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("score", None)
    return Outcome(**data)


def table(outcomes: list[Outcome], threshold: float) -> str:
    head = f"{'module':<22} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} {'explained':>9} {'score':>6} {'time':>6}  measured"
    rows = [head]
    for o in outcomes:
        survived = sum(1 for s in o.survivors if s["status"] != "no tests")
        no_tests = sum(1 for s in o.survivors if s["status"] == "no tests")
        mark = "" if o.score >= threshold else "  BELOW THE GATE"
        if o.unchecked:
            mark += f"  PARTIAL: {o.unchecked} not tested"
        rows.append(
            f"{o.module:<22} {o.total:>7} {o.counts.get('killed', 0):>6} "
            f"{o.counts.get('timeout', 0):>7} {survived:>8} {no_tests:>8} {len(o.explained):>9} "
            f"{o.score:>6.1%} {o.seconds / 60:>5.1f}m  {o.date}{mark}"
        )
    if outcomes:
        killed = sum(o.killed for o in outcomes)
        counted = sum(o.total - len(o.explained) - o.unchecked for o in outcomes)
        rows.append(
            f"{'total':<22} {sum(o.total for o in outcomes):>7} killed {killed} of the "
            f"{counted} not explained: {killed / counted if counted else 1:.1%} "
            f"(gate {threshold:.0%} per module)"
        )
    return "\n".join(rows)


def write_survivors(outcomes: list[Outcome]) -> Path:
    lines = [
        "# Surviving mutants of the modules measured (scripts/mutation); unexplained first.",
        "# Kill one with a test (tests/test_mutants_<module>.py) or explain it in",
        "# tests/mutation_explained.toml with its `mutant`, `change` and `reason`.",
        "",
    ]
    for o in outcomes:
        for s in o.survivors:
            lines += [
                f"## {o.module}: {s['mutant']} ({s['status']})",
                "change = " + json.dumps(s["change"]),
                s["diff"],
                "",
            ]
    for o in outcomes:
        for e in o.explained:
            lines += [
                f"## {o.module}: {e['mutant']} (explained)",
                f"reason: {e['reason']}",
                e["diff"],
                "",
            ]
    path = OUT / "survivors.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", help="modules of tests/mutation_targets.toml (default: all)"
    )
    parser.add_argument(
        "--max-children", type=int, default=2, help="mutants tested at once (default 2)"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the stored results; run nothing"
    )
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument(
        "--retest",
        action="store_true",
        help="run tests/test_mutants_<module>.py against the last run's survivors only",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="read the verdicts of a run still going or stopped (a partial figure); run nothing",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the last run of each module: keep its verdicts, test only the mutants left",
    )
    args = parser.parse_args(argv)
    threshold, targets = load_targets()
    unknown = [m for m in args.modules if m not in targets]
    if unknown:
        parser.error(f"not in {TARGETS.name}: {', '.join(unknown)} (known: {', '.join(targets)})")
    modules = args.modules or list(targets)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.retest or args.collect:
        for module in modules:
            if args.retest:
                retest(module, args.max_children)
            else:
                work = OUT / module
                if not (work / "mutants").exists():
                    raise SystemExit(f"{module}: no run to collect")
                # From the copy of the package to mutmut's last word.
                seconds = (work / "mutmut.log").stat().st_mtime - (work / "src").stat().st_mtime
                write_outcome(collect(module, work, seconds, load_explained()))
    elif not args.report:
        for module in modules:
            outcome = run_module(
                module, targets[module], args.max_children, args.verbose, args.resume
            )
            print(table([outcome], threshold), flush=True)
    outcomes = [o for o in (stored(m) for m in targets) if o is not None]
    shown = [o for o in outcomes if o.module in modules]
    print()
    print(table(shown, threshold))
    # An explanation is matched by its function and its change (collect), not by the mutant's
    # number, which shifts when lines are added above it: one that matched no survivor is unused.
    explained_now = {
        (e["mutant"].partition("__mutmut_")[0], tuple(e["change"]))
        for o in shown
        for e in o.explained
    }
    for o in shown:
        for name in o.stale_explanations:
            print(f"{o.module}: the explanation of {name} no longer matches its change: stale")
        for entry in load_explained():
            in_module = entry.mutant.startswith(f"dicom_bq.{o.module}.")
            matched = (entry.function, tuple(entry.change)) in explained_now
            if in_module and not matched and not o.unchecked:
                print(f"{o.module}: {entry.mutant} is explained but no survivor has its change")
    unmeasured = [m for m in modules if stored(m) is None]
    if unmeasured:
        print(f"not measured yet: {', '.join(unmeasured)}")
    print(f"survivors: {write_survivors(outcomes).relative_to(ROOT)}")
    below = [o.module for o in shown if o.score < threshold]
    return 1 if below or unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
