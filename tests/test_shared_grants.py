"""Two stacks of this project on one shared BigQuery project, bucket and topic: destroying or
changing one never removes a grant the other holds, and nothing is left behind silently.

Both stacks deploy from one source project, so their Healthcare agent is the same member: each
grants it roles/bigquery.jobUser on the shared BigQuery project, objectViewer on the shared bucket
and publisher on the shared topic. An additive IAM member resource adds its member to the role's
binding when created and removes it when deleted, whoever else added it (pulumi-gcp's IAM members
read, modify and write the policy: DESIGN.md, pulumi-gcp #442 and #2463); so `pulumi destroy` of
one stack would take those bindings from the other. The stacks are deployed under the deployment
model (tests/deployment_model.py: Google's create-time rules), then IAM is simulated as Google
keeps it: one binding per (scope, role, member), removed by the delete of any member resource
that is not kept on delete (Pulumi's retainOnDelete: the provider's Delete is not called,
https://www.pulumi.com/docs/iac/concepts/options/retainondelete/).
"""

from __future__ import annotations

from typing import Any

from dicom_bq.security.stacks import kept_grants, shared_grants
from dicom_bq.stack.plan import Plan, PlannedResource, plan_settings
from dicom_bq.vocabulary.scopes import kind_of_member
from tests import deployment_model as model

SOURCE, ANALYTICS = "imaging-nonprod", "analytics-nonprod"
BUCKET = "imaging-nonprod-filters"
TOPIC = f"projects/{SOURCE}/topics/dicom-instances"
AGENT = "serviceAccount:service-333344445555@gcp-sa-healthcare.iam.gserviceaccount.com"

Binding = tuple[str, str, str]  # scope, role, member


def stack(env: str, **changes: Any) -> Plan:
    settings = {
        "sourceProject": SOURCE,
        "sourceProjectNumber": "333344445555",
        "destinationProject": ANALYTICS,
        "destinationProjectNumber": "666677778888",
        "location": "us-central1",
        "healthcareDatasetId": f"imaging-{env}",
        "dicomStoreId": "dicom",
        "bigqueryDatasetId": f"dicom_{env}",
        "filterBucket": BUCKET,
        "notificationTopic": TOPIC,
        **changes,
    }
    return plan_settings(env, {k: v for k, v in settings.items() if v is not None})


def _binding(resource: PlannedResource) -> Binding | None:
    kind = kind_of_member(resource.type)
    if kind is None:
        return None
    inputs = resource.inputs
    return kind.uri_from_inputs(inputs), str(inputs["role"]), str(inputs["member"])


def _members(plan: Plan) -> dict[str, tuple[Binding, bool]]:
    """Each IAM member resource of the plan: its binding and whether it is kept on delete."""
    found = {}
    for resource in plan.custom_resources():
        binding = _binding(resource)
        if binding is not None:
            found[resource.name] = (binding, resource.retain_on_delete)
    return found


class SimulatedIam:
    """IAM as Google keeps it for additive members: a set of bindings."""

    def __init__(self) -> None:
        self.bindings: set[Binding] = set()

    def up(self, plan: Plan, before: Plan | None = None) -> None:
        """`pulumi up` of `plan` over a stack deployed as `before`: a member resource that is
        gone or whose inputs changed (every IAM member input replaces it) is deleted, unless
        kept on delete; the new ones are created."""
        old = _members(before) if before is not None else {}
        new = _members(plan)
        for name, (binding, kept) in old.items():
            if new.get(name, (None, False))[0] != binding and not kept:
                self.bindings.discard(binding)
        for binding, _ in new.values():
            self.bindings.add(binding)

    def destroy(self, plan: Plan) -> None:
        for binding, kept in _members(plan).values():
            if not kept:
                self.bindings.discard(binding)


def grants_needed(plan: Plan) -> set[Binding]:
    return {(g["scope"], g["role"], g["member"]) for g in plan.grants}


def _deploys(plan: Plan) -> None:
    """Deploys under Google's create-time rules (the typical delays; worst-case-only findings
    are the deployment model's own concern)."""
    assert [v for v in model.check(plan) if not getattr(v, "worst_case_only", False)] == []


def test_the_two_stacks_share_the_agents_grants_on_the_shared_scopes() -> None:
    dev, staging = stack("dev"), stack("staging")
    _deploys(dev)
    _deploys(staging)
    shared = grants_needed(dev) & grants_needed(staging)
    assert {(role, member) for _, role, member in shared} == {
        ("roles/bigquery.jobUser", AGENT),
        ("roles/storage.objectViewer", AGENT),
        ("roles/pubsub.publisher", AGENT),
    }


def test_destroying_one_stack_leaves_every_grant_the_other_needs() -> None:
    dev, staging = stack("dev"), stack("staging")
    iam = SimulatedIam()
    iam.up(dev)
    iam.up(staging)
    iam.destroy(dev)
    assert grants_needed(staging) - iam.bindings == set()
    # And the other way round.
    iam = SimulatedIam()
    iam.up(dev)
    iam.up(staging)
    iam.destroy(staging)
    assert grants_needed(dev) - iam.bindings == set()


def test_changing_one_stack_leaves_every_grant_the_other_needs() -> None:
    """dev moves to a topic of its own and stops using the shared bucket: its old member
    resources go (deleted or replaced), the bindings staging needs stay."""
    dev, staging = stack("dev"), stack("staging")
    iam = SimulatedIam()
    iam.up(dev)
    iam.up(staging)
    iam.up(
        stack("dev", notificationTopic=f"projects/{SOURCE}/topics/dev-only", filterBucket=None), dev
    )
    assert grants_needed(staging) - iam.bindings == set()


def test_only_grants_on_scopes_the_stack_does_not_create_are_kept() -> None:
    dev = stack("dev")
    kept = {(g.scope, g.role) for g in kept_grants(dev)}
    assert kept == {
        (f"//cloudresourcemanager.googleapis.com/projects/{ANALYTICS}", "roles/bigquery.jobUser"),
        (f"//storage.googleapis.com/projects/_/buckets/{BUCKET}", "roles/storage.objectViewer"),
        (f"//pubsub.googleapis.com/{TOPIC}", "roles/pubsub.publisher"),
    }
    # The dataset the stack creates goes with its bindings: its grant is not kept.
    (editor,) = [r for r in dev.custom_resources() if r.name.endswith("data-editor-dataset")]
    assert not editor.retain_on_delete


def test_a_dataset_the_stack_does_not_create_is_a_shared_scope() -> None:
    """With create_bigquery_dataset=False (the component used by another program), the
    dataset exists already: its dataEditor grant is kept too."""
    from dicom_bq.infra.grants import GrantRequest, grant_specs

    specs = grant_specs(
        GrantRequest(
            source_project=SOURCE,
            bigquery_project=ANALYTICS,
            bigquery_dataset_id="shared",
            creates_bigquery_dataset=False,
        )
    )
    assert {spec.key: spec.kept for spec in specs} == {
        "bigquery-data-editor-dataset": True,
        "bigquery-job-user": True,
    }


def test_nothing_is_left_behind_silently() -> None:
    """Destroyed, dev leaves its kept bindings: `dicom-bq shared-grants` lists each, the ones
    staging still makes as "keep it", the others with the command that removes them; those are
    exactly the bindings no stack needs any more."""
    dev, staging = stack("dev", dataEditorScope="project"), stack("staging")
    iam = SimulatedIam()
    iam.up(dev)
    iam.up(staging)
    iam.destroy(dev)
    left_over = iam.bindings - grants_needed(staging)
    listed = shared_grants(dev, [staging])
    to_remove = {
        (g.grant.scope, g.grant.role, g.grant.member) for g in listed.grants if not g.also_made_by
    }
    assert to_remove == left_over
    assert left_over == {
        (
            f"//cloudresourcemanager.googleapis.com/projects/{ANALYTICS}",
            "roles/bigquery.dataEditor",
            AGENT,
        )
    }
    (editor,) = [g for g in listed.grants if not g.also_made_by]
    assert editor.remove == (
        f"gcloud projects remove-iam-policy-binding {ANALYTICS} --member='{AGENT}' "
        "--role='roles/bigquery.dataEditor'"
    )
    assert {g.grant.role: g.also_made_by for g in listed.grants if g.also_made_by} == {
        "roles/bigquery.jobUser": ("staging",),
        "roles/storage.objectViewer": ("staging",),
        "roles/pubsub.publisher": ("staging",),
    }
    text = listed.text()
    assert "keep it: stack staging makes the same grant" in text
    assert f"    remove: {editor.remove}" in text


def test_the_shared_grants_command_lists_each_kept_grant_with_its_commands() -> None:
    import json

    from typer.testing import CliRunner

    from dicom_bq.cli import app
    from tests.inventory import ROOT

    result = CliRunner().invoke(
        app, ["shared-grants", "--stack", "prod", "--project-dir", str(ROOT), "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["stack"] == "prod"
    assert document["not_compared"] == {}  # dev was planned and compared
    by_role = {(g["role"], g["scope"]): g for g in document["grants"]}
    job_user = by_role[
        (
            "roles/bigquery.jobUser",
            "//cloudresourcemanager.googleapis.com/projects/imaging-analytics-prod",
        )
    ]
    assert job_user["also_made_by"] == []  # dev's agent is another project's
    assert job_user["resource"] == "dicom-bq-agent-bigquery-job-user"
    assert (
        job_user["check"] == "gcloud projects get-iam-policy imaging-analytics-prod --format=json"
    )
    assert job_user["remove"].startswith(
        "gcloud projects remove-iam-policy-binding imaging-analytics-prod --member='serviceAccount:"
        "service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com'"
    )
    assert len(document["grants"]) == 5
