"""`dicom-bq up`: the stack planned offline, preflight, `pulumi up`, then verify on the fresh
outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.export import ConfirmTruncate
from dicom_bq.flows.verify import VerifyObserver, VerifyOptions, VerifyReport, verify_each


@dataclass(frozen=True)
class PulumiUpFlags:
    """What `dicom-bq up` passes to `pulumi up` (https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/);
    no policy pack named means the project's own policy/ folder."""

    yes: bool = False
    policy_packs: list[Path] = field(default_factory=list)
    no_policy_pack: bool = False
    refresh: bool = False
    diff: bool = False
    targets: list[str] = field(default_factory=list)
    message: str | None = None


def deploy_and_verify(
    *,
    stack: str,
    project_dir: Path | None,
    preflight: bool,
    flags: PulumiUpFlags,
    options: VerifyOptions,
    permission_window: float,
    pulumi_output_to_stderr: bool,
    access: GoogleAccess,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
) -> VerifyReport:
    from dicom_bq.stack import outputs as stack_outputs
    from dicom_bq.stack.config import find_project_dir, read_stack_config
    from dicom_bq.stack.plan import plan_stack

    folder = project_dir or find_project_dir()
    # A bad stack fails here, offline, before pulumi touches anything.
    config = read_stack_config(folder, stack)
    deployer = config.values.get("gcp:impersonateServiceAccount")
    if access.impersonate and deployer and deployer != access.impersonate:
        # The provider's config wins over GOOGLE_IMPERSONATE_SERVICE_ACCOUNT: pulumi would
        # deploy as one account while preflight and verify run as another.
        raise DicomBqError(
            f"the stack sets gcp:impersonateServiceAccount {deployer}, which pulumi up "
            f"would use instead of --impersonate-service-account {access.impersonate}: drop one"
        )
    plan = plan_stack(config)
    if preflight:
        from dicom_bq.flows.preflight import preflight_plan, report_lines

        # The plan made above: the stack's config (and its ESC environments) is read once.
        report = preflight_plan(plan=plan, project_dir=folder, impersonate=access.impersonate)
        for line in report_lines(report):
            observer.notice(line)
        if not report.ok:
            raise DicomBqError(
                "preflight found what would make `pulumi up` fail (above): nothing was "
                "deployed; fix it, or pass --skip-preflight",
                exit_code=EXIT_FAILED,
            )
    if flags.no_policy_pack and flags.policy_packs:
        raise DicomBqError("--no-policy-pack and --policy-pack contradict each other")
    packs = [] if flags.no_policy_pack else flags.policy_packs or [folder / "policy"]
    up_options = stack_outputs.UpOptions(
        yes=flags.yes,
        policy_packs=[str(pack) for pack in packs],
        refresh=flags.refresh,
        diff=flags.diff,
        targets=list(flags.targets),
        message=flags.message,
    )
    code = stack_outputs.pulumi_up(
        stack,
        folder,
        up_options,
        output_to_stderr=pulumi_output_to_stderr,
        impersonate=access.impersonate,
    )
    if code != 0:
        raise DicomBqError(
            f"`pulumi up` failed with exit code {code}: nothing was verified",
            exit_code=EXIT_FAILED,
        )
    # Every store the stack now holds, as `verify --stack` checks them.
    targets = stack_outputs.targets_from_outputs(stack_outputs.read_stack_outputs(stack, folder))
    return verify_each(
        targets=targets,
        options=options,
        access=access,
        api_version="v1",
        permission_window=permission_window,
        # The stack's own verification table: Verifier truncates it without a question.
        truncate_confirmed=False,
        confirm_truncate=confirm_truncate,
        observer=observer,
    )
