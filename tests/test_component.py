"""The component as other programs use it: a team's program passing its own resources'
Outputs (infra/examples/consumer), and Pulumi's component analyzer reading its schema."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from typing import Any

import pytest

from dicom_bq.stack.plan import Plan, record_program
from tests import deployment_model as model
from tests.inventory import ROOT

CONSUMER = ROOT / "infra" / "examples" / "consumer" / "__main__.py"


def consumer_plan() -> Plan:
    def program() -> dict[str, Any]:
        runpy.run_path(str(CONSUMER), run_name="__main__")
        return {}

    return record_program("consumer", {}, program)


def named(plan: Plan, name: str) -> Any:
    (resource,) = [r for r in plan.custom_resources() if r.name == name]
    return resource


def test_a_consumer_passes_its_own_outputs_and_dependencies_follow() -> None:
    plan = consumer_plan()
    # The team's dataset is used, not a new one.
    datasets = [r.name for r in plan.custom_resources() if r.type == "gcp:bigquery/dataset:Dataset"]
    assert datasets == ["analytics"]
    editor = named(plan, "dicom-agent-bigquery-data-editor-dataset")
    assert editor.inputs["datasetId"] == "dicom_analytics"
    assert editor.inputs["project"] == "imaging-team-demo"
    assert "analytics" in editor.depends_on  # implicit: its dataset_id is the dataset's Output
    # The team's APIs, passed along inside the project ID it gives the component.
    assert not [r for r in plan.custom_resources() if r.name.startswith("dicom-apis-")]
    for name in ("dicom-agent-identity", "dicom-dicom-dataset"):
        assert {"api-healthcare", "imaging"} <= set(named(plan, name).depends_on)
    store = named(plan, "dicom-dicom-store")
    assert store.inputs["streamConfigs"] == [
        {"bigqueryDestination": {"tableUri": "bq://imaging-team-demo.dicom_analytics.instances"}}
    ]
    assert store.protect
    # The agent is the new project's, from its (Google-assigned) number.
    assert named(plan, "dicom-agent-bigquery-job-user").inputs["member"] == (
        "serviceAccount:service-PROJECT_NUMBER_OF_imaging-team-demo"
        "@gcp-sa-healthcare.iam.gserviceaccount.com"
    )


def test_the_consumer_deploys_under_googles_rules() -> None:
    """Ordered as Google needs within its typical 2 minutes. A team's own program runs plain
    `pulumi up`, which nothing re-runs: past that, the streaming store's create may fail while IAM
    propagates (up to 7 minutes), the one gap the README tells such teams about."""
    violations = model.check(consumer_plan())
    assert [v for v in violations if not v.worst_case_only] == []
    assert {v.rule for v in violations} <= {"streaming-store"}


def test_apis_can_be_left_to_the_consumer() -> None:
    from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

    def program() -> dict[str, Any]:
        DicomExportPath(
            "dicom",
            DicomExportPathArgs(
                source_project="team-project-1",
                source_project_number="111122223333",
                location="us-central1",
                healthcare_dataset_id="imaging",
                dicom_store_id="studies",
                bigquery_dataset_id="dicom",
                enable_apis=False,
            ),
        )
        return {}

    # The configured number is checked against Google's (here the mock's) before any grant.
    plan = record_program("no-apis", {}, program, known_numbers={"team-project-1": "111122223333"})
    assert not [r for r in plan.custom_resources() if r.type == "gcp:projects/service:Service"]
    assert sorted(
        r.name for r in plan.custom_resources() if r.type.endswith("dataset:Dataset")
    ) == [
        "dicom-bigquery-dataset",
        "dicom-dicom-dataset",
    ]


@pytest.mark.processes
def test_pulumis_component_analyzer_reads_the_schema() -> None:
    """The analyzer the Python component provider host runs (pulumi.provider.experimental),
    offline: the component package's schema, as `pulumi package add` would get it. In its own
    process, as the provider host runs: pulumi's provider modules register google.rpc.Status in
    protobuf's default pool, which then refuses google-api-core's copy in the same process."""
    script = (
        "from pulumi.provider.experimental.component import ComponentProvider\n"
        "from dicom_bq.provider.__main__ import COMPONENTS, PROVIDER_NAME\n"
        "print(ComponentProvider(COMPONENTS, PROVIDER_NAME, version='0.1.0').schema)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    schema = json.loads(answer.stdout)
    component = schema["resources"]["dicom-bq:index:DicomExportPath"]
    assert component["isComponent"] is True
    # The store is dicomStoreId or dicomStores: the component checks that one is given.
    assert sorted(component["requiredInputs"]) == [
        "bigqueryDatasetId",
        "healthcareDatasetId",
        "location",
        "sourceProject",
    ]
    inputs = component["inputProperties"]
    assert inputs["dicomStores"]["items"]["$ref"] == "#/types/dicom-bq:index:DicomStoreArgs"
    assert schema["types"]["dicom-bq:index:DicomStoreArgs"]["required"] == ["storeId"]
    assert {"createBigqueryDataset", "enableApis", "streamTables", "filterBucket"} <= set(inputs)
    assert inputs["streamTables"]["type"] == "array"
    outputs = component["properties"]
    assert {"storeName", "agentEmail", "verificationTableUri", "grants"} <= set(outputs)
    assert outputs["grants"]["items"]["$ref"] == "#/types/dicom-bq:index:GrantOutput"
    assert set(schema["types"]["dicom-bq:index:GrantOutput"]["properties"]) == {
        "role",
        "member",
        "scope",
        "reason",
    }


@pytest.mark.parametrize(
    ("argument", "feature"),
    [
        ("location", {"alert_emails": ["oncall@example.org"]}),
        ("healthcare_dataset_id", {"alert_emails": ["oncall@example.org"]}),
        ("location", {"snapshot_schedule": "0 2 * * *"}),
        ("healthcare_dataset_id", {"snapshot_schedule": "0 2 * * *"}),
        ("time_zone", {"snapshot_schedule": "0 2 * * *"}),
    ],
)
def test_what_alert_and_snapshot_names_are_made_of_must_be_text(
    argument: str, feature: dict[str, Any]
) -> None:
    """Metric names, filters, the snapshot account and the job's time zone are built from these
    when the program runs: another resource's Output there would become the text "Calling
    __str__ on an Output[T]" inside a log filter, so it is refused by name."""
    import pulumi

    from dicom_bq.errors import DicomBqError
    from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

    values: dict[str, Any] = {
        "source_project": "team-project-1",
        "source_project_number": "111122223333",
        "location": "us-central1",
        "healthcare_dataset_id": "imaging",
        "dicom_store_id": "studies",
        "bigquery_dataset_id": "dicom",
        "time_zone": "Europe/Paris",
        **feature,
    }

    def program() -> dict[str, Any]:
        values[argument] = pulumi.Output.from_input(values[argument])
        DicomExportPath("dicom", DicomExportPathArgs(**values))
        return {}

    with pytest.raises(DicomBqError, match=f"\\b{argument}\\b.* must be plain text"):
        record_program("outputs", {}, program)


KEY = "projects/kms-proj/locations/us-central1/keyRings/r/cryptoKeys/k"
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


def cmek_path(**extra: Any) -> dict[str, Any]:
    return {
        "source_project": "team-project-1",
        "source_project_number": "111122223333",
        "location": "us-central1",
        "healthcare_dataset_id": "imaging",
        "dicom_store_id": "studies",
        "bigquery_dataset_id": "dicom",
        "bigquery_kms_key": KEY,
        **extra,
    }


def path_plan(stack: str, values: dict[str, Any], **known: Any) -> Plan:
    from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

    def program() -> dict[str, Any]:
        path = DicomExportPath("dicom", DicomExportPathArgs(**values))
        return {"grants": path.grants}

    return record_program(stack, {}, program, **known)


def test_a_bigquery_key_without_the_dataset_it_keys_is_refused() -> None:
    """The key is the default of the dataset the component creates, and its grant to BigQuery's
    encryption account is made with that dataset: on a dataset made elsewhere the `grants`
    output would list a grant never made."""
    from dicom_bq.errors import DicomBqError

    with pytest.raises(DicomBqError) as raised:
        path_plan("key-no-dataset", cmek_path(create_bigquery_dataset=False))
    assert raised.value.message.startswith(
        "bigquery_kms_key sets the default key of the dataset this component creates; with "
        "create_bigquery_dataset=False set the key on your dataset"
    )


def test_the_grants_output_lists_exactly_the_grants_made() -> None:
    plan = path_plan("cmek", cmek_path(), known_numbers={"team-project-1": "111122223333"})
    made = sorted(
        (r.inputs["role"], r.inputs["member"])
        for r in plan.custom_resources()
        if r.type.lower().endswith("iammember")
    )
    listed = sorted((g["role"], g["member"]) for g in plan.outputs["grants"])
    assert listed == made
    assert (
        ENCRYPTER,
        "serviceAccount:bq-111122223333@bigquery-encryption.iam.gserviceaccount.com",
    ) in made


def test_bigquerys_encryption_account_is_unknown_offline_outside_googleapis() -> None:
    """No public source gives the account's address outside googleapis.com (vocabulary/naming.py):
    the offline plan shows it as unknown until the deploy's getServiceAccount lookup."""
    from dicom_bq.stack.plan import UNKNOWN_UNTIL_CREATED, plan_settings
    from tests.conftest import base_settings

    plan = plan_settings(
        "sovereign-cmek",
        base_settings(universeDomain="s3nsapis.fr", bigqueryKmsKey=KEY),
    )
    (grant,) = [g for g in plan.grants if g["role"] == ENCRYPTER]
    assert grant["member"] == UNKNOWN_UNTIL_CREATED
    (member,) = [
        r
        for r in plan.custom_resources()
        if r.type == "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
    ]
    assert member.inputs["member"] == UNKNOWN_UNTIL_CREATED
    assert not [g for g in plan.grants if "bigquery-encryption" in g["member"]]


def test_a_snapshot_outside_googleapis_keeps_every_grant_in_the_plan() -> None:
    """The snapshot account's address is Google's to assign outside googleapis.com: the plan
    shows it unknown, and every other grant of the stack stays listed for the review."""
    from dicom_bq.stack.plan import UNKNOWN_UNTIL_CREATED, plan_settings
    from tests.conftest import base_settings

    plan = plan_settings(
        "sovereign-snapshot",
        base_settings(universeDomain="s3nsapis.fr", snapshotSchedule="0 2 * * *"),
    )
    roles = {g["role"] for g in plan.grants}
    assert {"roles/bigquery.dataEditor", "roles/bigquery.jobUser"} <= roles
    snapshot = [g for g in plan.grants if "dicomBqSnapshotExport" in g["role"]]
    assert snapshot
    assert {g["member"] for g in snapshot} == {f"serviceAccount:{UNKNOWN_UNTIL_CREATED}"}
