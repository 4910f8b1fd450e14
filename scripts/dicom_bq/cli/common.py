"""What every command shares: the app, the one error boundary, options and option groups, output
helpers."""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from dicom_bq.errors import DicomBqError

if TYPE_CHECKING:
    from dicom_bq.flows.export import TruncateRisk
    from dicom_bq.flows.filters import FilterReport
    from dicom_bq.flows.operations import OperationState
    from dicom_bq.flows.verify import StepResult

app = typer.Typer(
    name="dicom-bq",
    help="Provision and verify the Cloud Healthcare API DICOM-to-BigQuery export path.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich's help renderer pulls in a Markdown parser and doubles start-up time.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from dicom_bq import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Provision and verify the Cloud Healthcare API DICOM-to-BigQuery export path."""


def fail(error: DicomBqError) -> NoReturn:
    from dicom_bq.flows.filters import InvalidFilterFileError
    from dicom_bq.texts import without_capabilities

    if isinstance(error, InvalidFilterFileError):
        # The validator's own "FILE:LINE: error: ..." lines say what to fix.
        print_filter_report(error.report, as_json=False)
        raise typer.Exit(error.exit_code)

    from dicom_bq.texts import terminal_safe

    # terminal_safe: whatever a message quotes, no escape sequence reaches the terminal.
    typer.echo(f"Error: {terminal_safe(without_capabilities(error.message))}", err=True)
    raise typer.Exit(error.exit_code)


# Exception classes (module.qualname, matched anywhere in the raised type's MRO) that mean Google
# answered with a refusal or could not be reached: the client libraries' own (googleapiclient
# HttpError, google.api_core's GoogleAPIError, google.auth's GoogleAuthError, google-resumable-
# media's InvalidResponse), the transports under them (requests, httplib2, sockets and TLS), and
# the errors dicom_bq.clients raises from an answer (ApiCallError and the export's two). Matched by
# name so that a command which never loaded a client library does not import it here.
_GOOGLE_FAILURES = frozenset(
    {
        "googleapiclient.errors.HttpError",
        "google.api_core.exceptions.GoogleAPIError",
        "google.auth.exceptions.GoogleAuthError",
        "google.resumable_media.common.InvalidResponse",
        "requests.exceptions.RequestException",
        "httplib2.error.HttpLib2Error",
        "socket.gaierror",
        "ssl.SSLError",
        "builtins.ConnectionError",
        "builtins.TimeoutError",
        "dicom_bq.clients.discovery.ApiCallError",
        "dicom_bq.clients.retry.TransientError",
        "dicom_bq.clients.healthcare.ExportNotStartedError",
        "dicom_bq.clients.healthcare.ExportAnswerLostError",
    }
)


def _is_google_failure(error: BaseException) -> bool:
    return any(
        f"{cls.__module__}.{cls.__qualname__}" in _GOOGLE_FAILURES for cls in type(error).__mro__
    )


def _known_failure(error: BaseException) -> DicomBqError | None:
    """Failures from below the domain modules that a user can act on, as a message; anything
    else (a bug) is left to show as one."""
    from dicom_bq.errors import EXIT_BAD_INPUT, EXIT_FAILED

    module = type(error).__module__
    name = type(error).__name__
    if module.startswith("google.auth") and name in ("RefreshError", "ReauthFailError"):
        return DicomBqError(
            "your Google credentials are expired or revoked: run `gcloud auth "
            "application-default login` (or renew the key in GOOGLE_APPLICATION_CREDENTIALS), "
            "then try again",
            exit_code=EXIT_FAILED,
        )
    if module.startswith("google.auth") and name == "DefaultCredentialsError":
        from dicom_bq.clients.endpoints import NO_CREDENTIALS

        return DicomBqError(NO_CREDENTIALS, exit_code=EXIT_FAILED)
    if _is_google_failure(error):
        from dicom_bq.texts import printable

        said = printable(str(error), GOOGLE_SAID)
        return DicomBqError(f"Google refused or could not be reached: {said}", EXIT_FAILED)
    if isinstance(error, UnicodeError):
        return DicomBqError(
            f"the input is not UTF-8 text ({name}): convert it to UTF-8", EXIT_BAD_INPUT
        )
    if isinstance(error, OSError):
        from dicom_bq.files import DiskFullError, is_disk_full

        if is_disk_full(error):
            return DiskFullError(error.filename)
        where = f" {error.filename}" if error.filename else ""
        return DicomBqError(f"cannot use{where}: {error.strerror or error}", EXIT_BAD_INPUT)
    return None


# How much of a failure's own words a message quotes.
GOOGLE_SAID = 1000
# The longest value any option other than a free-text one takes: a table URI is at most 2000
# characters, a gs:// URI about 1250, a path 4096 bytes (PATH_MAX) on Linux.
MAX_OPTION_CHARS = 8192
# Options whose value is free text, where a line break may be meant: a SQL query, its WHERE
# clause, the message of an update. Every other value is one identifier, URI, path or word.
FREE_TEXT_OPTIONS = frozenset({"query", "where", "message"})
# Characters no value of an option may hold: C0 and C1 controls (a line break, ESC, NUL; Unicode
# category Cc), and the line and paragraph separators U+2028 and U+2029 (Zl, Zp). A free-text
# value may hold line breaks and tabs.
_LINE_CHARACTERS = "\n\r\t"
# The same characters as one class: General_Category Cc is exactly U+0000-U+001F and
# U+007F-U+009F, Zl is U+2028 alone and Zp U+2029 alone (Unicode's UnicodeData.txt; tests hold it
# to unicodedata.category for every code point). A regular expression finds one in a 5 MiB value
# in milliseconds, where a category lookup per character took seconds.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORBIDDEN_IN_FREE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def _forbidden(value: str, free_text: bool) -> tuple[int, str] | None:
    """The first character `value` may not hold, and its position (1 for the first)."""
    found = (_FORBIDDEN_IN_FREE_TEXT if free_text else _FORBIDDEN).search(value)
    return None if found is None else (found.start() + 1, found.group())


def _parameter_names() -> dict[str, str]:
    """Each parameter of the running command, by its Python name, as the user spells it:
    --store, or the METAVAR of an argument."""
    try:  # typer 0.29 carries its own click; earlier ones use click itself
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - depends on the typer release
        from click import get_current_context  # type: ignore[import-not-found,no-redef,unused-ignore]

    context = get_current_context(silent=True)
    if context is None:
        return {}
    names = {}
    for parameter in context.command.params:
        if parameter.name is None:
            continue
        if parameter.param_type_name == "argument":
            names[parameter.name] = (parameter.metavar or parameter.name.upper()).strip("[]")
        else:
            names[parameter.name] = max(parameter.opts, key=len)
    return names


def screen_values(values: dict[str, Any]) -> None:
    """The front door of every command: no option or argument value holds a control character
    (a trailing newline, ESC, NUL) or is longer than any value it can take; DicomBqError (exit 2)
    naming the option and the value, before anything else runs, so before any request.

    `$` in a pattern matches before a final newline, and a path or name with a control character
    prints as something else than it is: refused here once, for every command, whatever checks
    come after."""
    from dicom_bq.texts import excerpt

    spelled = _parameter_names()
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, (str, Path)):
                continue
            text = str(item)
            flag = spelled.get(name, "--" + name.replace("_", "-"))
            free = name in FREE_TEXT_OPTIONS
            found = _forbidden(text, free)
            if found is not None:
                position, char = found
                allowed = "line breaks and tabs are fine" if free else "one line, no tabs"
                raise DicomBqError(
                    f"{flag} {excerpt(text)} is not valid: it holds the control character "
                    f"{char!r} (character {position} of {len(text)}); give printable text "
                    f"({allowed})"
                )
            if not free and len(text) > MAX_OPTION_CHARS:
                raise DicomBqError(
                    f"{flag} {excerpt(text)} is not valid: no value of it is more than "
                    f"{MAX_OPTION_CHARS} characters"
                )


# The Display of the running command: what Ctrl-C left behind is said by `guarded`, the one
# place that turns KeyboardInterrupt into exit code 130.
_display: contextvars.ContextVar[Display | None] = contextvars.ContextVar(
    "dicom_bq_display", default=None
)


def guarded(command: Callable[..., None]) -> Callable[..., None]:
    """The one error boundary of every command: a failure the user can act on becomes a short
    message on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from dicom_bq.errors import EXIT_INTERRUPTED

        token = _display.set(None)
        try:
            from dicom_bq.clients.endpoints import check_environment

            check_environment(os.environ)
            screen_values(kwargs)
            command(*args, **kwargs)
        except DicomBqError as error:
            fail(error)
        except KeyboardInterrupt:
            display = _display.get()
            typer.echo(display.interrupted() if display else "Interrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            known = _known_failure(error)
            if known is None:
                raise
            fail(known)
        finally:
            _display.reset(token)

    return run


def option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Options that sibling commands share, declared once: a parameter of `command` whose type
    is a dataclass of options (each field Annotated with its typer.Option or typer.Argument,
    its default the option's) stands for the group's fields, in its place, in the signature
    typer reads; so each command's --help lists every option, and the command receives the
    group built from them. Under `guarded`, which screens the options one by one."""
    import dataclasses
    import inspect
    import typing

    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[Callable[..., Any], list[str]]] = {}
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            # Keyword-only: a group's required field may follow an option with a default.
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = typing.get_type_hints(group, include_extras=True)
        fields = dataclasses.fields(group)
        parameters += [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty
                if field.default is dataclasses.MISSING
                else field.default,
                annotation=hints[field.name],
            )
            for field in fields
        ]
        groups[parameter.name] = (group, [field.name for field in fields])

    @functools.wraps(command)
    def run(**values: Any) -> None:
        for name, (group, fields) in groups.items():
            values[name] = group(**{field: values.pop(field) for field in fields})
        command(**values)

    expanded = signature.replace(parameters=parameters)
    run.__signature__ = expanded  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


ProjectDirOption = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help="Folder with Pulumi.yaml (default: the nearest one above the current folder).",
    ),
]


ApiVersionOption = Annotated[
    str, typer.Option("--api-version", help="Healthcare API version: v1 or v1beta1.")
]
ApiEndpointOption = Annotated[
    str | None,
    typer.Option("--api-endpoint", help="Healthcare API root URL, for private endpoints."),
]
ImpersonateOption = Annotated[
    str | None,
    typer.Option("--impersonate-service-account", help="Call Google as this service account."),
]
UniverseOption = Annotated[
    str | None,
    typer.Option(
        "--universe-domain", help="API universe of every Google client (default: googleapis.com)."
    ),
]
StackUniverseOption = Annotated[
    str | None,
    typer.Option(
        "--universe-domain",
        help="API universe of every Google client (default: the stack's, else googleapis.com).",
    ),
]
BillingProjectOption = Annotated[
    str | None,
    typer.Option(
        "--billing-project",
        help="Project the BigQuery job runs in and is billed to (default: your credentials' "
        "project, else the table's).",
    ),
]
# gcloud's resource flags (https://cloud.google.com/sdk/gcloud/reference/healthcare/dicom-stores/
# export/bq, .../healthcare/operations/describe), with an ID instead of the full name.
DatasetOption = Annotated[
    str | None, typer.Option("--dataset", help="gcloud's spelling: the Healthcare dataset ID.")
]
LocationOption = Annotated[
    str | None, typer.Option("--location", help="gcloud's spelling: the dataset's location.")
]
ProjectOption = Annotated[
    str | None, typer.Option("--project", help="gcloud's spelling: the dataset's project ID.")
]
TimeoutOption = Annotated[
    str | None,
    typer.Option("--timeout", help="Stop waiting after this long: seconds, or 90s, 30m, 2h."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
# The read-only commands' deployment: a stack's outputs, or a saved copy, and one of its stores.
StackOption = Annotated[
    str | None, typer.Option("--stack", "-s", help="Read the outputs of this stack.")
]
OutputsOption = Annotated[
    Path | None, typer.Option("--outputs", help="Saved `pulumi stack output --json`.")
]
StoreIdOption = Annotated[
    str | None,
    typer.Option("--store-id", help="Only this store of the stack (default: every one)."),
]
# The operations commands' argument (gcloud healthcare operations describe OPERATION).
OperationArgument = Annotated[
    str,
    typer.Argument(
        help="projects/P/locations/L/datasets/D/operations/ID, or gcloud's spelling: the ID "
        "with --dataset, --location and --project."
    ),
]
PermissionWindowOption = Annotated[
    str,
    typer.Option(
        "--permission-window",
        help="How long to retry PERMISSION_DENIED while new grants propagate.",
    ),
]


def confirm_truncate(risk: TruncateRisk) -> None:
    """The question the flow asks before erasing rows: at a terminal only, or refused."""
    if not sys.stdin.isatty():
        raise risk.refusal()
    if not typer.confirm(risk.question, default=False, err=True):
        raise DicomBqError("not confirmed: nothing was exported")


def export_interrupted(operations: list[str]) -> str:
    """Ctrl-C stops the waiting, never the export: say how to resume."""
    if operations:
        return (
            f"Interrupted: operation {operations[-1]} keeps running. Resume with: "
            f"dicom-bq operations wait {operations[-1]}"
        )
    return "Interrupted before an export operation was known."


class Display:
    """What an export or verify run shows on stderr: notices, retries, the operations started,
    each verify step; at a terminal, a spinner with the operation's counters. Entered, it is
    what `guarded` asks what Ctrl-C left running (`on_interrupt` of the operations known)."""

    def __init__(
        self,
        *,
        live: bool,
        activity: str,
        on_interrupt: Callable[[list[str]], str],
        spinner_from_start: bool = False,
        operations: list[str] | None = None,
    ) -> None:
        from rich.console import Console

        from dicom_bq.texts import MIN_WIDTH

        self.console = Console(stderr=True)
        # COLUMNS=0 would make rich print nothing at all.
        self.console.width = max(self.console.width, MIN_WIDTH)
        self.live = live and self.console.is_terminal
        self.activity = activity
        self.on_interrupt = on_interrupt
        self.spinner_from_start = spinner_from_start
        self.operations: list[str] = list(operations or [])
        self._status: Any = None

    def __enter__(self) -> Display:
        _display.set(self)
        if self.spinner_from_start:
            self._spin()
        return self

    def interrupted(self) -> str:
        return self.on_interrupt(self.operations)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _spin(self) -> None:
        if self.live and self._status is None:
            self._status = self.console.status(self.activity)
            self._status.start()

    def notice(self, message: str) -> None:
        typer.echo(message, err=True)

    def waiting(self, why: str, delay: float) -> None:
        typer.echo(f"{why}; retrying in {delay:.0f}s" if delay else why, err=True)

    def started(self, operation: str) -> None:
        self.operations.append(operation)
        typer.echo(f"Started {operation}", err=True)
        # After any question the flow asked: the spinner would hide a prompt.
        self._spin()

    def progress(self, state: OperationState, elapsed: float) -> None:
        if self._status is not None:
            self._status.update(
                f"{state.name.rsplit('/', 1)[-1]}: {state.state.lower()} {elapsed:.0f}s, "
                f"{state.success} done, {state.failure} failed, {state.pending} pending"
            )

    def step(self, result: StepResult) -> None:
        mark = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        self.console.print(
            f"{mark} {result.name:<10} {result.seconds:7.2f}s  {result.detail}",
            highlight=False,
            soft_wrap=True,
        )


def operation_summary(state: OperationState) -> str:
    # Plain lines, never wrapped: the names and commands in them are meant to be copied.
    lines = [
        f"operation: {state.name}",
        f"state:     {state.state}",
        *([f"created:   {state.create_time}"] if state.create_time else []),
        *([f"ended:     {state.end_time}"] if state.end_time else []),
        f"counters:  success={state.success} failure={state.failure} pending={state.pending}",
    ]
    if state.logs_url:
        lines.append(f"logs:      {state.logs_url}")
    if state.error_code is not None:
        lines.append(f"error:     {state.error_code} {state.error_message}")
    if not state.done:
        lines.append(f"resume:    dicom-bq operations wait {state.name}")
    return "\n".join(lines)


def finish_operation(state: OperationState, as_json: bool) -> NoReturn:
    if as_json:
        print_json(state.as_dict())
    else:
        typer.echo(operation_summary(state))
    raise typer.Exit(state.exit_code)


def print_filter_report(report: FilterReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    for problem in report.errors:
        typer.echo(
            f"{report.path}:{problem.line}: error: {problem.reason}: {problem.text}", err=True
        )
    if report.error_count > len(report.errors):
        typer.echo(f"... and {report.error_count - len(report.errors)} more errors", err=True)
    for problem in report.warnings:
        typer.echo(f"{report.path}:{problem.line}: warning: {problem.reason}", err=True)
    if report.warning_count > len(report.warnings):
        typer.echo(f"... and {report.warning_count - len(report.warnings)} more warnings", err=True)
    mixed = 0 < report.crlf_lines < report.lines
    typer.echo(
        f"{report.path}: {report.lines} lines, {report.error_count} errors, "
        f"{report.warning_count} warnings" + (" (mixed \\n and \\r\\n endings)" if mixed else "")
    )
