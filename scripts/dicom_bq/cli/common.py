"""What every command shares: the app, the one error boundary, options, output helpers."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dicom_bq.errors import DicomBqError

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
    from dicom_bq.texts import without_capabilities

    typer.echo(f"Error: {without_capabilities(error.message)}", err=True)
    raise typer.Exit(error.exit_code)


def _known_failure(error: BaseException) -> DicomBqError | None:
    """Failures from below the domain modules that a user can act on, as a message."""
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
    if module.startswith(
        (
            "google.auth",
            "google.api_core",
            "google.cloud",
            "google.resumable_media",
            "googleapiclient",
            "dicom_bq",
        )
    ):
        return DicomBqError(f"Google refused or could not be reached: {error}", EXIT_FAILED)
    if isinstance(error, UnicodeError):
        return DicomBqError(
            f"the input is not UTF-8 text ({name}): convert it to UTF-8", EXIT_BAD_INPUT
        )
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return DicomBqError(f"cannot use{where}: {error.strerror or error}", EXIT_BAD_INPUT)
    return None


def guarded(command: Callable[..., None]) -> Callable[..., None]:
    """The one error boundary of every command: a failure the user can act on becomes a short
    message on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from dicom_bq.errors import EXIT_INTERRUPTED

        try:
            command(*args, **kwargs)
        except DicomBqError as error:
            fail(error)
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            known = _known_failure(error)
            if known is None:
                raise
            fail(known)

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
TimeoutOption = Annotated[
    str | None,
    typer.Option("--timeout", help="Stop waiting after this long: seconds, or 90s, 30m, 2h."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
PermissionWindowOption = Annotated[
    str,
    typer.Option(
        "--permission-window",
        help="How long to retry PERMISSION_DENIED while new grants propagate.",
    ),
]


def _api_version(value: str) -> str:
    from dicom_bq.clients.healthcare import API_VERSIONS

    if value not in API_VERSIONS:
        raise DicomBqError(f"--api-version {value!r} is not valid: choose v1 or v1beta1")
    return value


def _connection(
    api_endpoint: str | None, impersonate: str | None, universe: str | None = None
) -> Any:
    from dicom_bq.clients.endpoints import Connection

    return Connection(
        universe_domain=universe or "googleapis.com",
        healthcare_endpoint=api_endpoint,
        impersonate=impersonate,
    )


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _progress(console: Any, status: Any) -> Any:
    def update(state: Any, elapsed: float) -> None:
        status.update(
            f"{state.name.rsplit('/', 1)[-1]}: {state.state.lower()} {elapsed:.0f}s, "
            f"{state.success} done, {state.failure} failed, {state.pending} pending"
        )

    return update


def _summary(state: Any) -> None:
    # Plain lines, never wrapped: the names and commands in them are meant to be copied.
    lines = [
        f"operation: {state.name}",
        f"state:     {state.state}",
        f"counters:  success={state.success} failure={state.failure} pending={state.pending}",
    ]
    if state.logs_url:
        lines.append(f"logs:      {state.logs_url}")
    if state.error_code is not None:
        lines.append(f"error:     {state.error_code} {state.error_message}")
    if not state.done:
        lines.append(f"resume:    dicom-bq operations wait {state.name}")
    typer.echo("\n".join(lines))


def _finish(state: Any, as_json: bool) -> NoReturn:
    if as_json:
        print_json(state.as_dict())
    else:
        _summary(state)
    raise typer.Exit(state.exit_code)


def _follow(api: Any, name: str, timeout: float | None, as_json: bool) -> Any:
    from dicom_bq.clients.discovery import ApiCallError
    from dicom_bq.clients.operations import Follower
    from dicom_bq.errors import EXIT_INTERRUPTED

    console = _err_console()
    try:
        if as_json or not console.is_terminal or timeout == 0:
            return Follower(api).follow(name, timeout)
        with console.status(f"waiting for {name}") as status:
            return Follower(api).follow(name, timeout, _progress(console, status))
    except ApiCallError as error:
        fail(
            DicomBqError(
                f"cannot read operation {name}: {error.status} {error.reason} {error.message}",
                exit_code=1,
            )
        )
    except KeyboardInterrupt:
        typer.echo(
            f"Interrupted: operation {name} keeps running. Resume with: "
            f"dicom-bq operations wait {name}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _say_wait(why: str, delay: float) -> None:
    typer.echo(f"{why}; retrying in {delay:.0f}s" if delay else why, err=True)
