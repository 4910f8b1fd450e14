"""The command line stays thin: typer and click live in cli/ only, and every command parses its
options, calls one flow (a function of dicom_bq.flows, which imports no typer), and prints."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "dicom_bq"
CLI = PACKAGE / "cli"
# What a command may import from the package: the flows it calls, the parsers of what users
# type, the errors and texts it prints, how to reach Google (settings, no calls), and the
# renderers and writers of its output. Google clients, stack reading and planning, security
# checks and filter building are reached through a flow.
CLI_MAY_IMPORT = (
    "dicom_bq.cli",
    "dicom_bq.flows",
    "dicom_bq.refs",
    "dicom_bq.spellings",
    "dicom_bq.errors",
    "dicom_bq.texts",
    "dicom_bq.files",
    "dicom_bq.stack.render",
    "dicom_bq.stack.graph",  # presentation too: the plan drawn (plan --format mermaid|dot)
    "dicom_bq.clients.endpoints",
)
FLOW_CALLS_PER_FUNCTION = 1


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _dicom_bq_module(path: Path) -> str:
    return ".".join(("dicom_bq", *path.relative_to(PACKAGE).with_suffix("").parts))


@pytest.mark.parametrize(
    "path",
    [p for p in _modules(PACKAGE) if CLI not in p.parents],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_cli_modules_import_typer_or_click(path: Path) -> None:
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    assert not [name for name in imported if name.split(".")[0] in ("typer", "click")]


@pytest.mark.parametrize("path", _modules(CLI), ids=lambda p: p.name)
def test_cli_reaches_the_domain_only_through_flows(path: Path) -> None:
    imported = _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    outside = [
        name
        for name in imported
        if name.split(".")[0] == "dicom_bq"
        and name != "dicom_bq"
        and not name.startswith(CLI_MAY_IMPORT)
    ]
    assert outside == [], f"{path.name} imports {outside}: call a flow in dicom_bq.flows instead"


def _flow_functions(tree: ast.AST) -> set[str]:
    """Names a cli module binds to functions of dicom_bq.flows (classes are values it builds)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dicom_bq.flows"):
            module = importlib.import_module(str(node.module))
            for alias in node.names:
                if inspect.isfunction(getattr(module, alias.name, None)):
                    found.add(alias.asname or alias.name)
    return found


# Flow functions that only turn a report into text: printing is not orchestrating.
RENDERERS = frozenset({"report_lines"})


def _flow_calls(tree: ast.AST, flows: set[str]) -> dict[str, list[str]]:
    """Each function's flow calls, counting those of the module's own helpers it calls (a
    command reading its input through a helper that calls a flow orchestrates all the same)."""
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}

    def called(function: ast.FunctionDef) -> list[str]:
        return [
            node.func.id
            for node in ast.walk(function)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        ]

    def reached(name: str, seen: frozenset[str]) -> list[str]:
        found = []
        for callee in called(functions[name]):
            if callee in flows and callee not in RENDERERS:
                found.append(callee)
            elif callee in functions and callee not in seen:
                found += reached(callee, seen | {callee})
        return found

    return {name: reached(name, frozenset({name})) for name in functions}


@pytest.mark.parametrize("path", _modules(CLI), ids=lambda p: p.name)
def test_each_cli_function_calls_at_most_one_flow(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    crowded = {
        name: calls
        for name, calls in _flow_calls(tree, _flow_functions(tree)).items()
        if len(calls) > FLOW_CALLS_PER_FUNCTION
    }
    assert crowded == {}, f"{path.name}: each command calls one flow; these orchestrate: {crowded}"


def test_a_command_calling_a_second_flow_through_a_helper_is_caught() -> None:
    """The check itself: the shape `status` had, a helper reading the outputs through one flow
    and the command calling another."""
    source = """
from dicom_bq.flows.review import plan_stack_offline
from dicom_bq.flows.status import check_status, report_lines

def _outputs(target):
    return plan_stack_offline(target=target, check=False).plan.outputs

def status(target):
    report = check_status(outputs=_outputs(target))
    print(report_lines(report))
"""
    tree = ast.parse(source)
    calls = _flow_calls(tree, _flow_functions(tree))
    assert calls["status"] == ["check_status", "plan_stack_offline"]


def _called_flows() -> list[tuple[str, str]]:
    """Every flow function a cli module imports, as (module, name)."""
    called = set()
    for path in _modules(CLI):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "dicom_bq.flows"
            ):
                called.update((str(node.module), alias.name) for alias in node.names)
    return sorted(called)


@pytest.mark.parametrize("flow", _called_flows(), ids=lambda f: f"{f[0]}.{f[1]}")
def test_flows_the_cli_calls_take_keyword_only_arguments(flow: tuple[str, str]) -> None:
    """A flow's several inputs are named at the call: no value means something by position."""
    function = getattr(importlib.import_module(flow[0]), flow[1])
    if not inspect.isfunction(function):
        return  # a class: the value a command builds and passes by name
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 1, f"{flow[0]}.{flow[1]} takes {positional} by position"


def _run_guarded(error: BaseException) -> None:
    from dicom_bq.cli.common import guarded

    @guarded
    def command() -> None:
        raise error

    command()


def test_a_bug_inside_dicom_bq_shows_as_a_bug() -> None:
    """Not "Google refused": an exception of dicom_bq's own that no flow turned into a
    DicomBqError (here the filter builder's) is a defect, shown with its traceback."""
    from dicom_bq.filters.filter_files import BuildError

    with pytest.raises(BuildError):
        _run_guarded(BuildError("CSV line 3: bad"))


@pytest.mark.parametrize(
    "error",
    [
        pytest.param("googleapiclient", id="googleapiclient-HttpError"),
        pytest.param("api_core", id="google.api_core-GoogleAPIError"),
        pytest.param("requests", id="requests-ConnectionError"),
        pytest.param("dicom_bq", id="dicom_bq.clients-ApiCallError"),
    ],
)
def test_a_google_refusal_is_a_message_and_exit_1(
    error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    if error == "googleapiclient":
        import httplib2
        from googleapiclient.errors import HttpError

        raised: BaseException = HttpError(httplib2.Response({"status": "403"}), b"denied")
    elif error == "api_core":
        from google.api_core.exceptions import Forbidden

        raised = Forbidden("denied")
    elif error == "requests":
        import requests

        raised = requests.exceptions.ConnectionError("reset")
    else:
        from dicom_bq.clients.discovery import ApiCallError

        raised = ApiCallError(403, "PERMISSION_DENIED", "denied")
    with pytest.raises(typer.Exit) as exit_:
        _run_guarded(raised)
    assert exit_.value.exit_code == 1
    assert "Google refused or could not be reached" in capsys.readouterr().err


def _group_cases() -> list[tuple[str, type]]:
    from dicom_bq.cli.export import OperationOptions
    from dicom_bq.cli.filters import QueryOptions

    return [("operations", OperationOptions), ("query", QueryOptions)]


@pytest.mark.parametrize(("words", "group"), _group_cases(), ids=["operations", "query"])
def test_sibling_commands_take_their_shared_options_from_one_group(words: str, group: type) -> None:
    """`operations describe`/`wait` and the `query` commands declare their shared options once
    (cli.common.option_groups): every command of the family lists each of the group's options,
    spelled and explained alike."""
    import dataclasses

    from tests.fast_cli import command_paths

    def spelled(command: Any) -> dict[str, tuple[Any, ...]]:
        return {p.name: (tuple(p.opts), getattr(p, "help", None)) for p in command.params}

    family = {
        path: spelled(command)
        for path, command in command_paths().items()
        if path.startswith(f"{words} ")
    }
    assert len(family) >= 2
    fields = [field.name for field in dataclasses.fields(group)]
    first = next(iter(family.values()))
    for path, options in family.items():
        assert {name: options.get(name) for name in fields} == {
            name: first[name] for name in fields
        }, path
