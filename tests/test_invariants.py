"""Rules every stack's plan must keep, whatever its settings."""

from __future__ import annotations

import pytest

from dicom_bq.stack.plan import Plan, plan_settings
from dicom_bq.vocabulary.scopes import SCOPE_KINDS, project_scope
from tests.conftest import base_settings, cached_plan

AUTHORITATIVE_IAM = ("IAMPolicy", "IAMBinding", "IamPolicy", "IamBinding")
PHI_TYPES = {
    "gcp:healthcare/dataset:Dataset",
    "gcp:healthcare/dicomStore:DicomStore",
    "gcp:bigquery/dataset:Dataset",
}
IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"


def by_type(plan: Plan, type_: str) -> list:  # type: ignore[type-arg]
    return [r for r in plan.custom_resources() if r.type == type_]


def grant_resources(plan: Plan) -> list:  # type: ignore[type-arg]
    return [r for r in plan.custom_resources() if "role" in r.inputs and "member" in r.inputs]


def agent_grant_resources(plan: Plan) -> list:  # type: ignore[type-arg]
    return [r for r in grant_resources(plan) if "@gcp-sa-healthcare." in r.inputs["member"]]


def test_no_authoritative_iam_resource(example_plan: Plan) -> None:
    for resource in example_plan.resources:
        assert not resource.type.endswith(AUTHORITATIVE_IAM), resource.type


@pytest.mark.parametrize(("stack", "number"), [("dev", "123456789012"), ("prod", "987654321098")])
def test_agent_is_the_source_projects_agent(stack: str, number: str) -> None:
    plan = cached_plan(stack)
    email = f"service-{number}@gcp-sa-healthcare.iam.gserviceaccount.com"
    assert plan.outputs["agentEmail"] == email
    members = {r.inputs["member"] for r in agent_grant_resources(plan)}
    assert members == {f"serviceAccount:{email}"}
    assert {g["member"] for g in plan.grants if "gcp-sa-healthcare" in g["member"]} == members


def test_prod_grants_land_in_the_destination_project() -> None:
    plan = cached_plan("prod")
    scopes = {g["role"]: g["scope"] for g in plan.grants}
    assert scopes["roles/bigquery.dataEditor"] == SCOPE_KINDS["bigquery_dataset"].uri(
        project="imaging-analytics-prod", resource="dicom_metadata"
    )
    assert scopes["roles/bigquery.jobUser"] == project_scope("imaging-analytics-prod")
    (job_user,) = [r for r in grant_resources(plan) if r.inputs["role"] == "roles/bigquery.jobUser"]
    assert job_user.inputs["project"] == "imaging-analytics-prod"


def test_every_grant_depends_on_the_service_identity(example_plan: Plan) -> None:
    (identity,) = by_type(example_plan, IDENTITY)
    grants = agent_grant_resources(example_plan)
    assert grants
    for grant in grants:
        assert identity.name in grant.depends_on, grant.name


def test_grant_resources_render_the_grants_list(example_plan: Plan) -> None:
    rendered = sorted((r.inputs["role"], r.inputs["member"]) for r in grant_resources(example_plan))
    listed = sorted((g["role"], g["member"]) for g in example_plan.grants)
    assert rendered == listed


def _named(plan: Plan, name: str):  # type: ignore[no-untyped-def]
    (resource,) = [r for r in plan.custom_resources() if r.name == name]
    return resource


def test_streaming_store_waits_for_propagation() -> None:
    plan = cached_plan("prod")
    sleep = _named(plan, "dicom-bq-agent-iam-propagation")
    (store,) = by_type(plan, "gcp:healthcare/dicomStore:DicomStore")
    assert store.inputs["streamConfigs"]
    assert sleep.name in store.depends_on
    assert set(sleep.depends_on) >= {g.name for g in agent_grant_resources(plan)}


def test_cmek_dataset_waits_for_propagation() -> None:
    plan = cached_plan("prod")
    (dataset,) = by_type(plan, "gcp:healthcare/dataset:Dataset")
    assert "dicom-bq-agent-iam-propagation" in dataset.depends_on


def test_bigquery_cmek_account_comes_from_bigquery_and_its_grant_propagates_first() -> None:
    plan = cached_plan("prod")
    key = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/bigquery"
    (grant,) = [r for r in grant_resources(plan) if r.inputs.get("cryptoKeyId") == key]
    # The address is the one BigQuery's getServiceAccount answered (which creates the account),
    # not one built from the project number.
    (lookup,) = [i for i in plan.invokes if i.token.endswith("getDefaultServiceAccount")]
    assert lookup.args["project"] == "imaging-analytics-prod"
    assert (
        grant.inputs["member"]
        == lookup.result["member"]
        == ("serviceAccount:bq-555566667777@bigquery-encryption.iam.gserviceaccount.com")
    )
    sleep = _named(plan, "dicom-bq-bigquery-iam-propagation")
    assert grant.name in sleep.depends_on
    (dataset,) = by_type(plan, "gcp:bigquery/dataset:Dataset")
    assert sleep.name in dataset.depends_on
    assert grant.inputs["member"] in {g["member"] for g in plan.grants}


def test_waits_carry_triggers_naming_each_grant_they_cover(example_plan: Plan) -> None:
    for sleep in by_type(example_plan, "time:index/sleep:Sleep"):
        covered = [_named(example_plan, name) for name in sleep.depends_on]
        grants = [r for r in covered if "role" in r.inputs]
        assert grants, sleep.name
        triggers = sleep.inputs["triggers"]
        assert len(triggers) == len(grants)
        for grant in grants:
            prefix = f"{grant.inputs['role']} {grant.inputs['member']} //"
            assert any(t.startswith(prefix) for t in triggers.values()), grant.name


def test_every_grant_is_replaced_delete_before_replace(example_plan: Plan) -> None:
    grants = grant_resources(example_plan)
    assert grants
    assert all(g.delete_before_replace for g in grants)


def test_protect_follows_protected(example_plan: Plan) -> None:
    protected = example_plan.stack == "prod"
    for resource in example_plan.custom_resources():
        assert resource.protect == (protected and resource.type in PHI_TYPES), resource.name


def test_bigquery_never_deletes_contents(example_plan: Plan) -> None:
    (dataset,) = by_type(example_plan, "gcp:bigquery/dataset:Dataset")
    assert dataset.inputs["deleteContentsOnDestroy"] is False


def test_apis_are_never_disabled_on_destroy(example_plan: Plan) -> None:
    services = by_type(example_plan, "gcp:projects/service:Service")
    assert {s.inputs["service"] for s in services} == {
        "healthcare.googleapis.com",
        "bigquery.googleapis.com",
    }
    assert all(s.inputs["disableOnDestroy"] is False for s in services)


def test_project_scope_for_data_editor_when_asked() -> None:
    plan = plan_settings("scope", base_settings(dataEditorScope="project"))
    (editor,) = [g for g in plan.grants if g["role"] == "roles/bigquery.dataEditor"]
    assert editor["scope"] == project_scope("dicom-src-test")


def test_unknown_project_number_is_resolved_at_deploy_time() -> None:
    plan = plan_settings("nonumber", base_settings(sourceProjectNumber=None))
    assert plan.notes
    assert "sourceProjectNumber" in plan.notes[0]
    assert plan.outputs["agentEmail"].startswith("service-PROJECT_NUMBER_OF_dicom-src-test@")


def test_sovereign_universe_changes_agent_domain_and_endpoint() -> None:
    plan = plan_settings("tpc", base_settings(universeDomain="s3nsapis.fr"))
    assert plan.outputs["agentEmail"].endswith(
        "@gcp-sa-healthcare.s3ns-system.iam.gserviceaccount.com"
    )
    assert plan.outputs["dicomwebUrl"].startswith("https://healthcare.s3nsapis.fr/v1/")


def test_twenty_stacks_plan_in_one_process() -> None:
    names = set()
    for index in range(20):
        plan = plan_settings(f"gen{index}", base_settings(dicomStoreId=f"store-{index}"))
        (store,) = by_type(plan, "gcp:healthcare/dicomStore:DicomStore")
        names.add(store.inputs["name"])
        assert len(plan.custom_resources()) == 9
    assert len(names) == 20
