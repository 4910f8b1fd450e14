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
    verify_interrupted,
)

if TYPE_CHECKING:
    from dicom_bq.flows.verify import VerifyReport


def _verify_display(as_json: bool) -> Display:
    return Display(
        live=not as_json,
        activity="verifying",
        on_interrupt=verify_interrupted,
        spinner_from_start=True,
    )


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
        bool, typer.Option("--no-seed", help="Export what is there; compare counts.")
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
        bool, typer.Option("--keep", help="Keep the synthetic instance (and temporary store).")
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
            stack=stack,
            outputs=outputs,
            store=store,
            store_id=store_id,
            table=table,
            filter_bucket=filter_bucket,
            project_dir=project_dir,
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
    """`dicom-bq preflight`, `pulumi up` on the stack (with the project's policy pack), then
    `verify` on its fresh outputs."""
    from dicom_bq.flows.access import GoogleAccess
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
    display = _verify_display(as_json)
    with display:
        report = deploy_and_verify(
            stack=stack,
            project_dir=project_dir,
            preflight=not skip_preflight,
            flags=flags,
            options=options,
            permission_window=window,
            pulumi_output_to_stderr=as_json,
            access=GoogleAccess(impersonate=impersonate),
            confirm_truncate=confirm_truncate,
            observer=display,
        )
    _print_report(report, as_json)
