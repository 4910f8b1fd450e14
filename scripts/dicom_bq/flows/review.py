"""Planning and security review: `dicom-bq plan`, `review`, `audit` and `preflight`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_bq.errors import DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.preflight import PreflightReport
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


def _plan(stack: str, project_dir: Path | None) -> Plan:
    from dicom_bq.stack.config import find_project_dir, read_stack_config
    from dicom_bq.stack.plan import plan_stack

    return plan_stack(read_stack_config(project_dir or find_project_dir(), stack))


@dataclass(frozen=True)
class CheckedPlan:
    plan: Plan
    findings: list[Finding]
    checked: bool

    @property
    def mandatory_failed(self) -> bool:
        from dicom_bq.security.checks import has_mandatory

        return has_mandatory(self.findings)


def plan_stack_offline(*, stack: str, project_dir: Path | None, check: bool) -> CheckedPlan:
    """The stack's resources and grants, planned offline; with `check`, the policy findings."""
    result = _plan(stack, project_dir)
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
    stack: str,
    project_dir: Path | None,
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

    result = _plan(stack, project_dir)
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


def audit_stack(
    *, stack: str | None, outputs: Path | None, project_dir: Path | None, access: GoogleAccess
) -> AuditResult:
    """The live IAM policies against the grants of a stack (planned) or of saved outputs."""
    from dicom_bq.security.audit import AuditTarget, run_audit
    from dicom_bq.stack.contract import StackOutputs

    if (stack is None) == (outputs is None):
        raise DicomBqError("say what to audit with exactly one of --stack NAME or --outputs FILE")
    document: dict[str, Any]
    if outputs is not None:
        from dicom_bq.stack.outputs import read_outputs_file

        document = read_outputs_file(outputs)
        target = AuditTarget.from_outputs(outputs.stem, document)
    else:
        assert stack is not None
        document = _plan(stack, project_dir).outputs
        target = AuditTarget.from_outputs(stack, document)
    # The deployment's own universe (its universeDomain output), unless named here.
    connection = access.connection(default_universe=StackOutputs.parse(document).universe_domain)
    return run_audit(connection, target, stacks=_project_stacks(project_dir))


def _project_stacks(project_dir: Path | None) -> ProjectStacks | None:
    """The stacks of the project folder (given, or found from here); None without one."""
    from dicom_bq.stack.config import find_project_dir

    if project_dir is None:
        try:
            project_dir = find_project_dir()
        except DicomBqError:
            return None
    return read_project_stacks(project_dir)


def preflight_check(
    *, stack: str, project_dir: Path | None, access: GoogleAccess
) -> PreflightReport:
    from dicom_bq.flows.preflight import preflight_stack
    from dicom_bq.stack.config import find_project_dir

    return preflight_stack(
        stack=stack,
        project_dir=project_dir or find_project_dir(),
        impersonate=access.impersonate,
    )


def shared_grants_of_stack(*, stack: str, project_dir: Path | None) -> SharedGrants:
    """The grants the stack keeps when destroyed, and which other stacks of the project make
    the same ones: every stack planned offline."""
    from dicom_bq.stack.config import available_stacks, find_project_dir
    from dicom_bq.stack.plan import UNRESOLVED_NUMBER

    folder = project_dir or find_project_dir()
    plan = _plan(stack, folder)
    others: list[Plan] = []
    not_compared: dict[str, str] = {}
    for other in available_stacks(folder):
        if other == stack:
            continue
        try:
            other_plan = _plan(other, folder)
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
