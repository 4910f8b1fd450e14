"""The policy allow-list, generated from the program: what DBQ018/DBQ019 allow a stack to create.

The real program runs under the recording mock (dicom_bq.stack.plan) on the example stacks
(Pulumi.dev.yaml, Pulumi.prod.yaml), the generated stacks of tests/stacks.py and its inventoried
ones (three-stores, operations); every resource type registered, every (principal, role, scope
kind) of the `grants` output and every custom role's permission set goes into
scripts/dicom_bq/data/allowed_types.json. Regenerate after an intended change with

    python -m tests.allowlist

then review the diff like the IAM inventories': a new type or grant is a new thing every stack
may create. tests/test_policy_allowlist.py fails when the file drifts from the program.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dicom_bq.infra import policy_rules
from dicom_bq.infra.policy_rules import ProgramAllowlist, principal_of, role_key, scope_kind
from dicom_bq.stack.plan import Plan, plan_settings
from tests.inventory import ROOT
from tests.stacks import INVENTORIED, generated_stacks

ALLOWLIST = ROOT / "scripts" / "dicom_bq" / policy_rules.ALLOWLIST_FILE
EXAMPLES = ("dev", "prod")
_GENERATED: dict[str, Plan] = {}


def stack_names() -> list[str]:
    return [*EXAMPLES, *INVENTORIED, *(name for name, _ in generated_stacks())]


def _cache() -> dict[str, Plan]:
    """Where generated stacks' plans are kept in this process: tests/test_deployment_model.py's
    cache when that module is loaded (the same settings give the same plan, and a plan costs
    ~0.2 s), else this module's."""
    shared = getattr(sys.modules.get("tests.test_deployment_model"), "_PLANS", None)
    return shared if isinstance(shared, dict) else _GENERATED


def planned(name: str) -> Plan:
    """The plan of a stack the allow-list is made from (cached, like tests/conftest.py's)."""
    if name in EXAMPLES or name in INVENTORIED:
        from tests.conftest import cached_plan

        return cached_plan(name)
    cache = _cache()
    if name not in cache:
        cache[name] = plan_settings(name, dict(generated_stacks())[name])
    return cache[name]


def grant_key(grant: dict[str, str]) -> tuple[str, str, str]:
    """(principal, role, scope kind) of a grant of the `grants` output."""
    principal = principal_of(grant["member"])
    kind = scope_kind(grant["scope"])
    if principal is None or kind is None:
        raise ValueError(f"a grant of the program names no known principal or scope: {grant}")
    return principal, role_key(grant["role"]), kind


def allowlist_of(plans: list[Plan]) -> ProgramAllowlist:
    resources = [r for plan in plans for r in plan.resources]
    return ProgramAllowlist(
        custom_types=frozenset(r.type for r in resources if r.custom),
        component_types=frozenset(r.type for r in resources if not r.custom),
        grants=frozenset(grant_key(g) for plan in plans for g in plan.grants),
        custom_role_permissions=frozenset(
            frozenset(r.inputs.get("permissions") or [])
            for r in resources
            if r.type == policy_rules.CUSTOM_ROLE
        ),
    )


def render(allowlist: ProgramAllowlist) -> str:
    return json.dumps(allowlist.as_json(), indent=2) + "\n"


def write(path: Path = ALLOWLIST) -> Path:
    path.write_text(render(allowlist_of([planned(n) for n in stack_names()])), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write().relative_to(ROOT)} from {len(stack_names())} stacks")
