"""`dicom-bq up`: the stack planned offline, preflight, `pulumi up`, then verify on the fresh
outputs."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.export import ConfirmTruncate
from dicom_bq.flows.verify import VerifyObserver, VerifyOptions, VerifyReport, verify_each

if TYPE_CHECKING:
    from dicom_bq.stack.plan import Plan


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
    own_pack = folder / "policy"
    packs = [] if flags.no_policy_pack else flags.policy_packs or [own_pack]
    with tempfile.TemporaryDirectory(prefix="dicom-bq-policy-") as scratch:
        up_options = stack_outputs.UpOptions(
            yes=flags.yes,
            policy_packs=[str(pack) for pack in packs],
            policy_pack_configs=_policy_pack_configs(
                packs=packs, own_pack=own_pack, plan=plan, folder=Path(scratch)
            ),
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


def own_pack_config(plan: Plan) -> dict[str, dict[str, object]]:
    """The project's pack's config for this stack: what `plan --check` and `review` hold the
    plan to, so that `pulumi up` enforces the same (protection, CMEK, locations, grants)."""
    from dicom_bq.infra.policy_config import pack_config
    from dicom_bq.stack.plan import UNRESOLVED_NUMBER

    settings = plan.settings
    assert settings is not None, "plan_stack records the settings it planned"
    number = plan.project_numbers.get(settings.source_project)
    known = number is not None and number != UNRESOLVED_NUMBER.format(
        project=settings.source_project
    )
    return pack_config(
        protected=settings.protected,
        allowed_bigquery_locations=settings.allowed_bigquery_locations,
        require_cmek=settings.require_cmek,
        source_project=settings.source_project,
        source_project_number=number if known else None,
        # The plan names the agent service-NUMBER@...: with the number unknown offline, its
        # grants would match no agent the deployment creates, so the pack uses its role
        # allow-list instead.
        grants=plan.grants if known else None,
    )


def _policy_pack_configs(
    *, packs: list[Path], own_pack: Path, plan: Plan, folder: Path
) -> list[str]:
    """A config file per pack when the project's pack is among them (its config comes from the
    plan; another pack gets {}, its own defaults); none otherwise."""
    if own_pack.resolve() not in {pack.resolve() for pack in packs}:
        return []
    files = []
    for index, pack in enumerate(packs):
        document = own_pack_config(plan) if pack.resolve() == own_pack.resolve() else {}
        path = folder / f"policy-pack-{index}.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        files.append(str(path))
    return files
