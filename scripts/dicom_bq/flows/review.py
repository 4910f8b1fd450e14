"""Planning and security review: `dicom-bq plan`, `review`, `audit` and `preflight`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_bq.errors import DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.preflight import PreflightReport
from dicom_bq.flows.targets import Target
from dicom_bq.infra.policy_rules import Finding
from dicom_bq.security.audit import AuditResult
from dicom_bq.security.stacks import ProjectStacks, SharedGrants, read_project_stacks, shared_grants
from dicom_bq.stack.plan import Plan

__all__ = [
    "CheckedPlan",
    "PreflightReport",
    "ReviewResult",
    "audit_stack",
    "plan_stack_offline",
    "preflight_check",
    "review_stack",
    "shared_grants_of_stack",
]


def _plan(target: Target) -> Plan:
    from dicom_bq.stack.plan import plan_stack

    return plan_stack(target.config())


@dataclass(frozen=True)
class CheckedPlan:
    plan: Plan
    findings: list[Finding]
    checked: bool

    @property
    def mandatory_failed(self) -> bool:
        from dicom_bq.security.checks import has_mandatory

        return has_mandatory(self.findings)


def plan_stack_offline(*, target: Target, check: bool) -> CheckedPlan:
    """The stack's resources and grants, planned offline; with `check`, the policy findings."""
    result = _plan(target)
    findings: list[Finding] = []
    if check:
        from dicom_bq.security.checks import check_plan

        assert result.settings is not None
        findings = check_plan(result, result.settings)
    return CheckedPlan(plan=result, findings=findings, checked=check)


@dataclass(frozen=True)
class ReviewResult:
    text: str
    passed: bool


def review_stack(
    *,
    target: Target,
    online: bool,
    as_markdown: bool,
    output: Path | None,
    replace: bool,
    access: GoogleAccess,
) -> ReviewResult:
    """The review document as text; an `output` that cannot be written is refused first."""
    from dicom_bq.files import check_output

    if output is not None:
        check_output(output, replace=replace)
    from dicom_bq.security import roles
    from dicom_bq.security.checks import check_plan
    from dicom_bq.security.review import review_document, review_markdown

    result = _plan(target)
    settings = result.settings
    assert settings is not None
    findings = check_plan(result, settings)
    lookup = (
        roles.IamRoles(access.connection(default_universe=settings.universe_domain)).get
        if online
        else roles.from_snapshot
    )
    document = review_document(result, findings, lookup)
    text = (
        review_markdown(document, findings)
        if as_markdown
        else json.dumps(document, indent=2) + "\n"
    )
    return ReviewResult(text=text, passed=bool(document["policy"]["passed"]))


def audit_stack(*, target: Target, access: GoogleAccess) -> AuditResult:
    """The live IAM policies against the grants of a stack (planned) or of saved outputs."""
    from dicom_bq.security.audit import AuditTarget, run_audit
    from dicom_bq.vocabulary.contract import StackOutputs

    target.check("what to audit")
    document: dict[str, Any]
    if target.outputs is not None:
        document = target.outputs_document()
        expected = AuditTarget.from_outputs(target.outputs.stem, document)
    else:
        document = _plan(target).outputs
        expected = AuditTarget.from_outputs(target.named_stack(), document)
    # The deployment's own universe (its universeDomain output), unless named here.
    connection = access.connection(default_universe=StackOutputs.parse(document).universe_domain)
    return run_audit(connection, expected, stacks=_project_stacks(target))


def _project_stacks(target: Target) -> ProjectStacks | None:
    """The stacks of the project folder (given, or found from here); None without one."""
    try:
        folder = target.folder()
    except DicomBqError:
        return None
    return read_project_stacks(folder)


def preflight_check(*, target: Target, access: GoogleAccess) -> PreflightReport:
    from dicom_bq.flows.preflight import preflight_stack

    return preflight_stack(
        stack=target.named_stack(), project_dir=target.folder(), impersonate=access.impersonate
    )


def shared_grants_of_stack(*, target: Target) -> SharedGrants:
    """The grants the stack keeps when destroyed, and which other stacks of the project make
    the same ones: every stack planned offline."""
    from dicom_bq.stack.config import available_stacks
    from dicom_bq.stack.plan import UNRESOLVED_NUMBER

    folder = target.folder()
    stack = target.named_stack()
    plan = _plan(Target(stack=stack, project_dir=folder))
    others: list[Plan] = []
    not_compared: dict[str, str] = {}
    for other in available_stacks(folder):
        if other == stack:
            continue
        try:
            other_plan = _plan(Target(stack=other, project_dir=folder))
        except DicomBqError as error:
            not_compared[other] = error.message.splitlines()[0]
            continue
        unresolved = [
            p
            for p, n in other_plan.project_numbers.items()
            if n == UNRESOLVED_NUMBER.format(project=p)
        ]
        if unresolved:
            not_compared[other] = (
                f"the number of {', '.join(unresolved)} is not in its stack file: its agent's "
                "address is known only once deployed"
            )
        others.append(other_plan)
    return shared_grants(plan, others, not_compared)
