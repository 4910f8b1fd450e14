"""Proving the path: verify, and up (preflight, pulumi up, verify)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ApiVersionOption,
    Display,
    ImpersonateOption,
    JsonOption,
    OutputsOption,
    PermissionWindowOption,
    ProjectDirOption,
    StackOption,
    StoreIdOption,
    TimeoutOption,
    app,
    confirm_truncate,
    guarded,
    print_json,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from dicom_bq.flows.verify import StepResult, VerifyReport


class VerifyDisplay(Display):
    """The Display of verify and up. After Ctrl-C it says what the cleanup saw: each step is
    remembered, so the last words repeat the cleanup's own (what was deleted, what was found
    gone, the commands for what may remain), never a deletion that was not seen."""

    def __init__(
        self,
        *,
        live: bool,
        spinner_from_start: bool = True,
        before_verify: Callable[[list[str]], str] | None = None,
    ) -> None:
        super().__init__(
            live=live,
            activity="verifying",
            on_interrupt=self._interrupted,
            spinner_from_start=spinner_from_start,
        )
        # What Ctrl-C before verify's first step left (up: while pulumi ran).
        self.before_verify = before_verify
        self.verifying = False  # a verify step was seen
        self.cleanup: StepResult | None = None  # the current store's cleanup or keep step

    def step(self, result: StepResult) -> None:
        if result.name == "store":  # each store's proof starts with it
            self.verifying = True
            self.cleanup = None
        elif result.name in ("cleanup", "keep"):
            self.cleanup = result
        super().step(result)

    def _interrupted(self, operations: list[str]) -> str:
        where = (
            f"operation {operations[-1]} keeps running; follow it with: dicom-bq operations wait "
            f"{operations[-1]}"
            if operations
            else "no export had started"
        )
        if not self.verifying:
            return (
                self.before_verify(operations) if self.before_verify else f"Interrupted ({where})."
            )
        if self.cleanup is None:
            return (
                f"Interrupted ({where}); nothing had been made yet: no temporary store, "
                "synthetic instance, filter file or scratch table."
            )
        if self.cleanup.name == "keep":
            return f"Interrupted ({where}); --keep: {self.cleanup.detail}."
        if self.cleanup.ok:
            return f"Interrupted ({where}); cleanup: {self.cleanup.detail}."
        return f"Interrupted ({where}); cleanup NOT finished: {self.cleanup.detail}."


def _verify_display(as_json: bool) -> Display:
    return VerifyDisplay(live=not as_json)


def _print_report(report: VerifyReport, as_json: bool) -> NoReturn:
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("verification passed" if report.ok else "verification FAILED")
    raise typer.Exit(report.exit_code)


@app.command()
@guarded
def verify(
    stack: StackOption = None,
    outputs: OutputsOption = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Or name the store directly.")
    ] = None,
    store_id: StoreIdOption = None,
    table: Annotated[
        str | None, typer.Option("--table", help="Verification table (default: the stack's).")
    ] = None,
    filter_bucket: Annotated[
        str | None,
        typer.Option("--filter-bucket", help="Bucket for the filter file, with --store."),
    ] = None,
    no_seed: Annotated[
        bool,
        typer.Option(
            "--no-seed",
            help="Export the real store into a scratch table (made with an expiration, deleted "
            "at the end) and compare counts.",
        ),
    ] = False,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place", help="Seed the real store instead of a temporary one in its dataset."
        ),
    ] = False,
    accept_stream_rows: Annotated[
        bool,
        typer.Option(
            "--accept-synthetic-in-streams",
            help="With --in-place on a store that streams or notifies: accept that its stream "
            "tables and topic keep the synthetic instance for good.",
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep the synthetic instance (and temporary store), or --no-seed's scratch "
            "table until it expires.",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Confirm WRITE_TRUNCATE of a --table that has rows."),
    ] = False,
    timeout: TimeoutOption = "30m",
    permission_window: PermissionWindowOption = "10m",
    api_version: ApiVersionOption = "v1",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prove the export path: seed a synthetic instance into a temporary store in the stack's
    Healthcare dataset, export it to the tool's own table, find its row, delete the store."""
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.targets import Target
    from dicom_bq.flows.verify import VerifyOptions, verify_path
    from dicom_bq.refs import parse_optional_timeout, parse_timeout

    options = VerifyOptions(
        seed=not no_seed,
        in_place=in_place,
        accept_stream_rows=accept_stream_rows,
        keep=keep,
        timeout=parse_optional_timeout(timeout),
    )
    window = parse_timeout(permission_window, "--permission-window")
    display = _verify_display(as_json)
    with display:
        report = verify_path(
            target=Target(
                stack=stack,
                outputs=outputs,
                project_dir=project_dir,
                store_id=store_id,
                store=store,
                table=table,
                filter_bucket=filter_bucket,
            ),
            options=options,
            access=GoogleAccess(api_endpoint=api_endpoint, impersonate=impersonate),
            api_version=api_version,
            permission_window=window,
            truncate_confirmed=yes,
            confirm_truncate=confirm_truncate,
            observer=display,
        )
    _print_report(report, as_json)


@app.command()
@guarded
def up(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The stack to deploy, then verify.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Pass --yes to pulumi up (no preview prompt).")
    ] = False,
    no_seed: Annotated[
        bool, typer.Option("--no-seed", help="Verify without a synthetic instance.")
    ] = False,
    timeout: TimeoutOption = "30m",
    permission_window: PermissionWindowOption = "10m",
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="Do not run `dicom-bq preflight` first.")
    ] = False,
    policy_pack: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy-pack",
            help="A CrossGuard pack for pulumi up (repeatable); default: the project's policy/.",
        ),
    ] = None,
    no_policy_pack: Annotated[
        bool, typer.Option("--no-policy-pack", help="Run pulumi up without any policy pack.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Pass --refresh to pulumi up.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Pass --diff to pulumi up.")] = False,
    targets: Annotated[
        list[str] | None,
        typer.Option("--target", help="Pass --target URN to pulumi up (repeatable)."),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Pass -m MESSAGE to pulumi up.")
    ] = None,
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """`dicom-bq preflight`, `pulumi up` on the stack (with the project's policy pack; run
    again while what it failed on is IAM or metric propagation, within Google's windows), then
    `verify` on its fresh outputs."""
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.targets import Target
    from dicom_bq.flows.up import PulumiUpFlags, deploy_and_verify
    from dicom_bq.flows.verify import VerifyOptions
    from dicom_bq.refs import parse_optional_timeout, parse_timeout

    options = VerifyOptions(seed=not no_seed, timeout=parse_optional_timeout(timeout))
    window = parse_timeout(permission_window, "--permission-window")
    flags = PulumiUpFlags(
        yes=yes,
        policy_packs=list(policy_pack or []),
        no_policy_pack=no_policy_pack,
        refresh=refresh,
        diff=diff,
        targets=list(targets or []),
        message=message,
    )
    # No spinner until verify's export starts: pulumi's own display (and its confirmation
    # prompt) shares the terminal while it runs.
    display = VerifyDisplay(
        live=not as_json, spinner_from_start=False, before_verify=_interrupted_deploying
    )
    with display:
        report = deploy_and_verify(
            target=Target(stack=stack, project_dir=project_dir),
            preflight=not skip_preflight,
            flags=flags,
            options=options,
            permission_window=window,
            pulumi_output_to_stderr=as_json,
            access=GoogleAccess(impersonate=impersonate),
            confirm_truncate=confirm_truncate,
            observer=display,
        )
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("verification passed" if report.ok else "verification FAILED")
    raise typer.Exit(report.exit_code)


def _interrupted_deploying(operations: list[str]) -> str:
    """Ctrl-C before verify began: during preflight, `pulumi up` (which was let finish its own
    cancellation) or a wait between two of its runs."""
    return (
        "Interrupted before verify began: what `pulumi up` created stays; run `dicom-bq up` "
        "again to finish."
    )
