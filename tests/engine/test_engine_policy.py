"""The CrossGuard pack under the real engine's analyzer: `pulumi preview --policy-pack policy`.

The examples pass with the config `dicom-bq up` writes; a program that adds the red team's
bypasses to the real program is refused, each bypass named by a mandatory policy. The engine loads
the pack (PulumiPolicy.yaml, its own virtualenv), hands it the stack's resources as it registered
them and enforces the levels: nothing here is our harness.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dicom_bq.stack.config import read_stack_config
from dicom_bq.stack.plan import plan_stack
from tests.engine.harness import ROOT, Workspace

pytestmark = pytest.mark.engine

MIXED_AGENT = "serviceAccount:Service-123456789012@GCP-SA-Healthcare.iam.gserviceaccount.com"

# Each bypass as pulumi-gcp's Python SDK registers it, with the policy that must refuse it.
# (Fixtures of tests/test_policy_rules.py, issue 9's red team.)
BYPASSES = {
    "open-dataset": (
        "dbq003-no-public-members",
        'gcp.bigquery.DatasetAccess("open-dataset", project="dicom-bq-dev", '
        'dataset_id="dicom_metadata_dev", role="READER", special_group="allAuthenticatedUsers")',
    ),
    "owner-dataset": (
        "dbq002-no-basic-roles",
        'gcp.bigquery.DatasetAccess("owner-dataset", project="dicom-bq-dev", '
        'dataset_id="dicom_metadata_dev", role="OWNER", iam_member="allUsers")',
    ),
    "open-bucket": (
        "dbq003-no-public-members",
        'gcp.storage.BucketACL("open-bucket", bucket="dicom-bq-dev-filters", '
        'role_entities=["READER:allUsers"])',
    ),
    "open-objects": (
        "dbq003-no-public-members",
        'gcp.storage.DefaultObjectAccessControl("open-objects", bucket="dicom-bq-dev-filters", '
        'entity="allUsers", role="READER")',
    ),
    "bucket-acl-entry": (
        "dbq003-no-public-members",
        'gcp.storage.BucketAccessControl("bucket-acl-entry", bucket="dicom-bq-dev-filters", '
        'entity="allUsers", role="READER")',
    ),
    "org-editor": (
        "dbq006-agent-narrow-scope",
        'gcp.organizations.IAMMember("org-editor", org_id="123", '
        f'role="roles/bigquery.dataEditor", member="{MIXED_AGENT}")',
    ),
    "folder-jobs": (
        "dbq006-agent-narrow-scope",
        'gcp.folder.IAMMember("folder-jobs", folder="folders/1", role="roles/bigquery.jobUser", '
        f'member="{MIXED_AGENT}")',
    ),
    "shouted-admin": (
        "dbq004-agent-no-admin-or-impersonation",
        'gcp.projects.IAMMember("shouted-admin", project="dicom-bq-dev", '
        f'role="roles/bigquery.admin", member="{MIXED_AGENT}")',
    ),
    "project-owner": (
        "dbq002-no-basic-roles",
        'gcp.projects.IAMMember("project-owner", project="dicom-bq-dev", role="roles/owner", '
        'member="user:someone@example.com")',
    ),
    "public-topic": (
        "dbq003-no-public-members",
        'gcp.pubsub.TopicIAMMember("public-topic", project="dicom-bq-dev", topic="t", '
        'role="roles/pubsub.subscriber", member="allUsers")',
    ),
    "authoritative-binding": (
        "dbq001-no-authoritative-iam",
        'gcp.projects.IAMBinding("authoritative-binding", project="dicom-bq-dev", '
        'role="roles/bigquery.jobUser", members=["user:someone@example.com"])',
    ),
}


def _pack_config(workspace: Workspace) -> Path:
    """The pack's config as `dicom-bq up` writes it from the plan."""
    from dicom_bq.flows.up import own_pack_config

    path = workspace.path / "policy-config.json"
    plan = plan_stack(read_stack_config(ROOT, "dev", use_cli=False))
    path.write_text(json.dumps(own_pack_config(plan)))
    return path


def test_examples_pass_the_pack(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    workspace.copy_stack("dev")
    workspace.init("dev")
    config = _pack_config(workspace)
    done = workspace.pulumi(
        "preview", "--policy-pack", "policy", "--policy-pack-config", str(config), stack="dev"
    )
    assert "mandatory" not in done.stdout.lower(), done.stdout


def test_bypasses_are_refused_by_the_engine(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    program = workspace.path / "bypass"
    program.mkdir()
    lines = [
        "import pulumi_gcp as gcp",
        "from dicom_bq.infra.program import define_stack, load_settings",
        "define_stack(load_settings())",
        *(code for _, code in BYPASSES.values()),
    ]
    (program / "__main__.py").write_text("\n".join(lines) + "\n")
    project = (workspace.path / "Pulumi.yaml").read_text()
    (workspace.path / "Pulumi.yaml").write_text(re.sub(r"(?m)^main: .*$", "main: bypass/", project))
    workspace.copy_stack("dev")
    workspace.init("dev")
    config = _pack_config(workspace)
    done = workspace.pulumi(
        "preview",
        "--policy-pack",
        "policy",
        "--policy-pack-config",
        str(config),
        stack="dev",
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    missed = [
        name
        for name, (policy, _) in BYPASSES.items()
        if not re.search(rf"\[mandatory\]\s+{policy}[^\n]*\n(?:[^\[]*?){re.escape(name)}:", output)
    ]
    assert not missed, f"not refused by their policy: {missed}\n{output[-8000:]}"
