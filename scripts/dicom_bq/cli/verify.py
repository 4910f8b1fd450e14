"""Proving the path: verify, and up (preflight, pulumi up, verify)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ApiVersionOption,
    ImpersonateOption,
    JsonOption,
    PermissionWindowOption,
    ProjectDirOption,
    TimeoutOption,
    _api_version,
    _connection,
    _err_console,
    _progress,
    _say_wait,
    app,
    fail,
    guarded,
    print_json,
)
from dicom_bq.cli.export import _confirm_truncate
from dicom_bq.errors import DicomBqError


def _verify_target(
    stack: str | None,
    outputs: Path | None,
    store: str | None,
    table: str | None,
    filter_bucket: str | None,
    project_dir: Path | None,
) -> Any:
    from dicom_bq.refs import StoreName, TableUri
    from dicom_bq.stack import outputs as stack_outputs

    sources = [stack is not None, outputs is not None, store is not None]
    if sum(sources) != 1:
        raise DicomBqError(
            "say where to verify with exactly one of --stack NAME, --outputs FILE or "
            "--store NAME (with --table)"
        )
    if store is not None:
        if table is None:
            raise DicomBqError(
                "--store needs --table bq://PROJECT.DATASET.TABLE for the verification export"
            )
        from dicom_bq.infra import identifiers

        problem = identifiers.check_bucket(filter_bucket) if filter_bucket else None
        if problem:
            raise DicomBqError(f"--filter-bucket {filter_bucket!r} is not valid: {problem}")
        return stack_outputs.VerifyTarget(
            StoreName.parse(store), TableUri.parse(table), filter_bucket
        )
    if outputs is not None:
        document = stack_outputs.read_outputs_file(outputs)
    else:
        from dicom_bq.stack.config import find_project_dir

        assert stack is not None
        document = stack_outputs.read_stack_outputs(stack, project_dir or find_project_dir())
    return stack_outputs.target_from_outputs(document, table)


def run_verify(
    target: Any,
    options: Any,
    window: float,
    api_version: str,
    connection: Any,
    as_json: bool,
    yes: bool = False,
) -> NoReturn:
    from dicom_bq.clients.bigquery import BigQueryTables
    from dicom_bq.clients.healthcare import HealthcareApi
    from dicom_bq.clients.operations import Follower
    from dicom_bq.clients.storage import StorageObjects
    from dicom_bq.errors import EXIT_INTERRUPTED
    from dicom_bq.flows.export import Exporter
    from dicom_bq.flows.verify import Verifier

    api = HealthcareApi(connection, api_version)
    filters = StorageObjects(connection, target.store.project) if target.filter_bucket else None
    console = _err_console()
    started: list[str] = []
    status: Any = None

    def show(step: Any) -> None:
        mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
        console.print(
            f"{mark} {step.name:<10} {step.seconds:7.2f}s  {step.detail}",
            highlight=False,
            soft_wrap=True,
        )

    def on_start(name: str) -> None:
        started.append(name)
        typer.echo(f"Started {name}", err=True)

    def on_update(state: Any, elapsed: float) -> None:
        if status is not None:
            _progress(console, status)(state, elapsed)

    verifier = Verifier(
        api=api,
        rows=BigQueryTables(connection, target.table.project),
        filters=filters,
        exporter=Exporter(api, permission_window=window, agent_email=target.agent_email),
        follower=Follower(api),
        on_step=show,
        on_start=on_start,
        on_update=on_update,
        on_wait=_say_wait,
        confirm_truncate=lambda table: _confirm_truncate(table, connection, yes),
    )
    try:
        if as_json or not console.is_terminal:
            report = verifier.run(target, options)
        else:
            with console.status("verifying") as status:
                report = verifier.run(target, options)
    except KeyboardInterrupt:
        where = (
            f"operation {started[-1]} keeps running; follow it with: dicom-bq operations wait "
            f"{started[-1]}"
            if started
            else "no export had started"
        )
        typer.echo(f"Interrupted ({where}); the temporary store was deleted.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("verification passed" if report.ok else "verification FAILED")
    raise typer.Exit(report.exit_code)


@app.command()
@guarded
def verify(
    stack: Annotated[
        str | None, typer.Option("--stack", "-s", help="Read the outputs of this stack.")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="Saved `pulumi stack output --json`.")
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Or name the store directly.")
    ] = None,
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
    try:
        from dicom_bq.refs import parse_timeout

        seconds = parse_timeout(timeout) if timeout is not None else None
        window = parse_timeout(permission_window, "--permission-window")
        version = _api_version(api_version)
        from dicom_bq.flows.verify import VerifyOptions

        if accept_stream_rows and not in_place:
            raise DicomBqError(
                "--accept-synthetic-in-streams goes with --in-place: without it, verify seeds a "
                "temporary store and nothing is left in the real store's streams"
            )
        if no_seed and in_place:
            raise DicomBqError("--no-seed stores nothing: drop --in-place")
        target = _verify_target(stack, outputs, store, table, filter_bucket, project_dir)
        connection = _connection(api_endpoint, impersonate, target.universe_domain)
        options = VerifyOptions(
            seed=not no_seed,
            in_place=in_place,
            accept_stream_rows=accept_stream_rows,
            keep=keep,
            timeout=seconds,
        )
        run_verify(target, options, window, version, connection, as_json, yes)
    except DicomBqError as error:
        fail(error)


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
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """`dicom-bq preflight`, `pulumi up` on the stack (with the project's policy pack), then
    `verify` on its fresh outputs."""
    try:
        from dicom_bq.refs import parse_timeout
        from dicom_bq.stack import outputs as stack_outputs
        from dicom_bq.stack.config import find_project_dir, read_stack_config

        folder = project_dir or find_project_dir()
        seconds = parse_timeout(timeout) if timeout is not None else None
        window = parse_timeout(permission_window, "--permission-window")
        # A bad stack fails here, offline, before pulumi touches anything.
        from dicom_bq.stack.plan import plan_stack

        plan = plan_stack(read_stack_config(folder, stack))
        if not skip_preflight:
            from dicom_bq.flows.preflight import preflight_plan, report_lines

            # The plan made above: the stack's config (and its ESC environments) is read once.
            report = preflight_plan(plan=plan, project_dir=folder, impersonate=None)
            for line in report_lines(report):
                typer.echo(line, err=True)
            if not report.ok:
                raise DicomBqError(
                    "preflight found what would make `pulumi up` fail (above): nothing was "
                    "deployed; fix it, or pass --skip-preflight",
                    exit_code=1,
                )
        packs = [] if no_policy_pack else [str(p) for p in policy_pack or [folder / "policy"]]
        if no_policy_pack and policy_pack:
            raise DicomBqError("--no-policy-pack and --policy-pack contradict each other")
        options = stack_outputs.UpOptions(
            yes=yes,
            policy_packs=packs,
            refresh=refresh,
            diff=diff,
            targets=list(targets or []),
            message=message,
        )
        code = stack_outputs.pulumi_up(stack, folder, options, output_to_stderr=as_json)
        if code != 0:
            raise DicomBqError(
                f"`pulumi up` failed with exit code {code}: nothing was verified", exit_code=1
            )
        target = stack_outputs.target_from_outputs(stack_outputs.read_stack_outputs(stack, folder))
        connection = _connection(None, None, target.universe_domain)
        from dicom_bq.flows.verify import VerifyOptions

        run_verify(
            target,
            VerifyOptions(seed=not no_seed, timeout=seconds),
            window,
            "v1",
            connection,
            as_json,
        )
    except DicomBqError as error:
        fail(error)
