"""The stand-in providers' own behaviour, without the engine: diffs and replacements, computed
outputs, the simulated IAM, faults, the installed plugin layout, and one real gRPC round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import empty_pb2  # type: ignore[import-untyped]
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from tests.engine.standins import common, gcp, install
from tests.engine.standins import time as time_standin
from tests.engine.standins.common import (
    UNKNOWN,
    Binding,
    Provider,
    StandinError,
    read_bindings,
    to_plain,
    to_struct,
)
from tests.engine.standins.sdkschema import resource_schema

STACK = "urn:pulumi:dev::dicom-bq::dicom-bq:index:DicomExportPath$"
AGENT = "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"


def urn(token: str, name: str, stack: str = "dev") -> str:
    return f"urn:pulumi:{stack}::dicom-bq::dicom-bq:index:DicomExportPath${token}::{name}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        common.CLOUD_ENV,
        common.FAULTS_ENV,
        common.STATE_DIR_ENV,
        common.PROJECTS_ENV,
        common.SLEEP_ENV,
        "GOOGLE_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
    ):
        monkeypatch.delenv(name, raising=False)


def gcp_provider(project: str = "dicom-bq-dev") -> Provider:
    provider = gcp.provider()
    provider.configure({"project": project, "version": "10.2.0"}, {})
    return provider


DATASET = "gcp:healthcare/dataset:Dataset"
STORE = "gcp:healthcare/dicomStore:DicomStore"
DATASET_INPUTS = {"location": "us-central1", "name": "imaging-dev", "project": "dicom-bq-dev"}
STORE_INPUTS = {
    "dataset": "projects/dicom-bq-dev/locations/us-central1/datasets/imaging-dev",
    "name": "dicom-dev",
    "labels": {"env": "dev"},
    "streamConfigs": [{"bigqueryDestination": {"tableUri": "bq://p-1.ds.t"}}],
}


def created(provider: Provider, token: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    resource_urn = urn(token, name)
    checked, failures = provider.check(resource_urn, {}, inputs, b"seed")
    assert failures == []
    _, state = provider.create(resource_urn, checked, preview=False)
    return state


# --- diff and replacement ----------------------------------------------------------------------


def test_unchanged_inputs_diff_nothing_even_with_computed_outputs_in_state() -> None:
    provider = gcp_provider()
    state = created(provider, DATASET, "ds", {"location": "us-central1", "name": "imaging-dev"})
    assert state["project"] == "dicom-bq-dev"
    assert state["timeZone"] == "UTC"
    inputs = {"location": "us-central1", "name": "imaging-dev"}
    result = provider.diff(urn(DATASET, "ds"), state, inputs, inputs)
    assert result.changes == ()
    assert result.to_proto().changes == provider_pb2.DiffResponse.DIFF_NONE


def test_an_immutable_field_replaces_a_mutable_one_updates() -> None:
    provider = gcp_provider()
    state = created(provider, STORE, "store", STORE_INPUTS)
    moved = {**STORE_INPUTS, "name": "other", "labels": {"env": "prod"}}
    result = provider.diff(urn(STORE, "store"), state, STORE_INPUTS, moved)
    assert result.replaces == ["name"]
    assert result.diffs == ["labels", "name"]
    assert result.detailed == {"labels.env": ("update", False), "name": ("update", True)}
    proto = result.to_proto()
    assert proto.detailedDiff["name"].kind == provider_pb2.PropertyDiff.UPDATE_REPLACE
    assert proto.detailedDiff["labels.env"].kind == provider_pb2.PropertyDiff.UPDATE
    assert proto.hasDetailedDiff
    assert not proto.deleteBeforeReplace


def test_an_unknown_new_value_of_an_immutable_field_is_a_replacement() -> None:
    provider = gcp_provider()
    state = created(provider, STORE, "store", STORE_INPUTS)
    result = provider.diff(
        urn(STORE, "store"), state, STORE_INPUTS, {**STORE_INPUTS, "dataset": UNKNOWN}
    )
    assert result.replaces == ["dataset"]


def test_the_docstring_forces_new_fields_are_replacements() -> None:
    # pulumi_gcp/bigquery/dataset.py, location: "Changing this forces a new resource to be
    # created"; serviceaccount/account.py, account_id: "...forces a new service account...".
    for kind in (gcp.BigQueryDataset(), gcp.ServiceAccount(), gcp.DicomStore()):
        assert kind.schema.doc_forces_new
        assert kind.schema.doc_forces_new <= kind.replace_on
    assert "location" in gcp.BigQueryDataset().schema.doc_forces_new


def test_every_modelled_force_new_field_is_an_input_of_the_sdk() -> None:
    for kind in [*gcp.KINDS, time_standin.Sleep()]:
        tops = {pattern.split(".")[0].split("[")[0] for pattern in kind.force_new}
        assert tops <= set(kind.schema.inputs), kind.token


def test_iam_member_role_or_member_change_replaces() -> None:
    provider = gcp_provider()
    token = "gcp:projects/iAMMember:IAMMember"
    inputs = {"project": "dicom-bq-dev", "role": "roles/bigquery.jobUser", "member": AGENT}
    state = created(provider, token, "job-user", inputs)
    for key, value in (("role", "roles/bigquery.user"), ("member", "user:a@example.org")):
        result = provider.diff(urn(token, "job-user"), state, inputs, {**inputs, key: value})
        assert result.replaces == [key]


def test_a_nested_immutable_field_replaces_its_siblings_update() -> None:
    provider = gcp_provider()
    token = "gcp:logging/metric:Metric"
    inputs = {
        "name": "m",
        "filter": "severity>=ERROR",
        "metricDescriptor": {
            "metricKind": "DELTA",
            "valueType": "INT64",
            "labels": [{"key": "store", "description": "a"}],
        },
    }
    state = created(provider, token, "m", inputs)
    relabel = json.loads(json.dumps(inputs))
    relabel["metricDescriptor"]["labels"][0]["description"] = "b"
    result = provider.diff(urn(token, "m"), state, inputs, relabel)
    assert result.detailed == {"metricDescriptor.labels[0].description": ("update", False)}
    rekey = json.loads(json.dumps(inputs))
    rekey["metricDescriptor"]["labels"][0]["key"] = "dataset"
    result = provider.diff(urn(token, "m"), state, inputs, rekey)
    assert result.replaces == ["metricDescriptor"]


def test_a_computed_input_no_longer_set_keeps_its_value_another_is_deleted() -> None:
    provider = gcp_provider()
    token = "gcp:bigquery/dataset:Dataset"
    inputs = {"datasetId": "d", "location": "EU", "description": "x"}
    state = created(provider, token, "bq", inputs)
    result = provider.diff(urn(token, "bq"), state, inputs, {"datasetId": "d"})
    assert result.detailed == {"description": ("delete", False)}


def test_ignore_changes_are_not_reported() -> None:
    provider = gcp_provider()
    state = created(provider, STORE, "store", STORE_INPUTS)
    result = provider.diff(
        urn(STORE, "store"),
        state,
        STORE_INPUTS,
        {**STORE_INPUTS, "labels": {"env": "x"}},
        ignore_changes=["labels"],
    )
    assert result.changes == ()


def test_property_paths_quote_keys_the_engine_could_not_parse() -> None:
    assert common.format_path(("labels", "data-class")) == 'labels["data-class"]'
    assert common.format_path(("streamConfigs", 1, "bigqueryDestination")) == (
        "streamConfigs[1].bigqueryDestination"
    )


# --- create, preview, update -------------------------------------------------------------------


def test_preview_leaves_computed_outputs_unknown() -> None:
    provider = gcp_provider()
    token = "gcp:projects/serviceIdentity:ServiceIdentity"
    identifier, state = provider.create(
        urn(token, "agent"), {"service": "healthcare.googleapis.com"}, preview=True
    )
    assert identifier == ""
    assert state["email"] == UNKNOWN
    assert state["member"] == UNKNOWN
    assert state["project"] == "dicom-bq-dev"


def test_created_ids_and_outputs_are_pulumi_gcps() -> None:
    provider = gcp_provider()
    identity_urn = urn("gcp:projects/serviceIdentity:ServiceIdentity", "agent")
    identifier, state = provider.create(
        identity_urn, {"service": "healthcare.googleapis.com"}, preview=False
    )
    assert identifier == "projects/dicom-bq-dev/services/healthcare.googleapis.com"
    assert state["email"] == "service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
    assert state["member"] == AGENT

    identifier, _ = provider.create(urn(DATASET, "ds"), DATASET_INPUTS, preview=False)
    assert identifier == "projects/dicom-bq-dev/locations/us-central1/datasets/imaging-dev"
    identifier, state = provider.create(urn(STORE, "s"), STORE_INPUTS, preview=False)
    assert identifier == f"{STORE_INPUTS['dataset']}/dicomStores/dicom-dev"
    assert state["effectiveLabels"] == {"env": "dev"}
    assert state["deletionPolicy"] == "DELETE"

    member_urn = urn("gcp:bigquery/datasetIamMember:DatasetIamMember", "editor")
    identifier, _ = provider.create(
        member_urn,
        {"datasetId": "d", "role": "roles/bigquery.dataEditor", "member": AGENT},
        preview=False,
    )
    # resourceIamMemberCreate: <GetResourceId()>/<role>/<member>.
    assert identifier == f"projects/dicom-bq-dev/datasets/d/roles/bigquery.dataEditor/{AGENT}"

    account_urn = urn("gcp:serviceaccount/account:Account", "sa")
    identifier, state = provider.create(account_urn, {"accountId": "snap"}, preview=False)
    assert state["email"] == "snap@dicom-bq-dev.iam.gserviceaccount.com"
    assert identifier == f"projects/dicom-bq-dev/serviceAccounts/{state['email']}"


def test_project_numbers_examples_hash_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = gcp_provider()
    get = provider.invokes["gcp:organizations/getProject:getProject"]
    assert get(provider.ctx, {"projectId": "clinical-imaging-prod"})["number"] == "987654321098"
    derived = get(provider.ctx, {"projectId": "some-project"})["number"]
    assert len(derived) == 12
    assert derived == get(provider.ctx, {"projectId": "some-project"})["number"]
    monkeypatch.setenv(common.PROJECTS_ENV, json.dumps({"some-project": "111122223333"}))
    assert provider.invoke("gcp:organizations/getProject:getProject", {})["projectId"] == (
        "dicom-bq-dev"
    )
    assert get(provider.ctx, {"projectId": "some-project"})["number"] == "111122223333"
    account = provider.invoke(
        "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount",
        {"project": "imaging-analytics-prod"},
    )
    assert account["email"] == "bq-555566667777@bigquery-encryption.iam.gserviceaccount.com"
    assert account["member"] == "serviceAccount:" + account["email"]


def test_no_project_anywhere_fails_like_the_provider() -> None:
    provider = gcp.provider()
    with pytest.raises(StandinError, match="project: required field is not set"):
        provider.create(urn(DATASET, "ds"), {"location": "l", "name": "n"}, preview=False)


def test_check_reports_missing_and_unexpected_inputs_and_autonames() -> None:
    provider = gcp_provider()
    inputs, failures = provider.check(urn(STORE, "my-store"), {}, {"bogus": 1}, b"x")
    assert [f.split(":")[0] for f in failures] == ["dataset", "bogus"]
    assert inputs["name"].startswith("my-store-")
    assert len(inputs["name"]) == len("my-store-") + 7


def test_deletion_policy_prevent_refuses_delete() -> None:
    provider = gcp_provider()
    state = created(provider, DATASET, "ds", {**DATASET_INPUTS, "deletionPolicy": "PREVENT"})
    with pytest.raises(StandinError, match='without setting deletion_policy="DELETE"'):
        provider.delete(urn(DATASET, "ds"), "id", state)


def test_update_keeps_outputs_and_recomputes_labels() -> None:
    provider = gcp_provider()
    state = created(provider, STORE, "s", STORE_INPUTS)
    news = {**STORE_INPUTS, "labels": {"env": "prod"}}
    updated = provider.update(urn(STORE, "s"), state, STORE_INPUTS, news, preview=False)
    assert updated["selfLink"] == state["selfLink"]
    assert updated["effectiveLabels"] == {"env": "prod"}


# --- time Sleep --------------------------------------------------------------------------------

SLEEP = "time:index/sleep:Sleep"


def test_sleep_triggers_replace_duration_alone_updates() -> None:
    provider = time_standin.provider()
    inputs = {"createDuration": "60s", "triggers": {"grant": "a"}}
    identifier, state = provider.create(urn(SLEEP, "wait"), inputs, preview=False)
    assert "T" in identifier
    assert identifier.endswith("Z")
    assert "id" not in state
    longer = provider.diff(urn(SLEEP, "wait"), state, inputs, {**inputs, "createDuration": "3m"})
    assert longer.replaces == []
    assert longer.diffs == ["createDuration"]
    regrant = provider.diff(urn(SLEEP, "wait"), state, inputs, {**inputs, "triggers": {"g": "b"}})
    assert regrant.replaces == ["triggers"]


def test_sleep_validates_durations_like_terraform_provider_time() -> None:
    provider = time_standin.provider()
    _, failures = provider.check(urn(SLEEP, "w"), {}, {"createDuration": "1 minute"}, b"")
    assert failures
    assert failures[0].startswith("createDuration: must be a number")
    _, failures = provider.check(urn(SLEEP, "w"), {}, {}, b"")
    assert failures == [
        "createDuration: At least one attribute out of [destroy_duration,create_duration] "
        "must be specified"
    ]
    assert time_standin.duration_seconds("1.5m") == 90.0


def test_sleep_waits_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[float] = []
    monkeypatch.setattr(time_standin, "sleep", waited.append)
    provider = time_standin.provider()
    provider.create(urn(SLEEP, "w"), {"createDuration": "2s"}, preview=False)
    assert waited == []
    monkeypatch.setenv(common.SLEEP_ENV, "real")
    provider.create(urn(SLEEP, "w"), {"createDuration": "2s"}, preview=False)
    assert waited == [2.0]


# --- the simulated Google ----------------------------------------------------------------------


def test_two_stacks_share_one_binding_and_either_destroy_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = tmp_path / "google.json"
    monkeypatch.setenv(common.CLOUD_ENV, str(cloud))
    token = "gcp:projects/iAMMember:IAMMember"
    inputs = {"project": "dicom-bq-dev", "role": "roles/bigquery.jobUser", "member": AGENT}
    one, two = gcp_provider(), gcp_provider()  # two provider processes, two stacks
    id_one, state_one = one.create(urn(token, "m", "dev"), inputs, preview=False)
    id_two, _ = two.create(urn(token, "m", "dev2"), inputs, preview=False)
    assert read_bindings(cloud) == {
        Binding(
            "//cloudresourcemanager.googleapis.com/projects/dicom-bq-dev",
            "roles/bigquery.jobUser",
            AGENT,
        )
    }
    one.delete(urn(token, "m", "dev"), id_one, state_one)
    assert read_bindings(cloud) == set()
    # The other stack's refresh finds its member gone, as Google would show it.
    assert two.read(urn(token, "m", "dev2"), id_two, state_one) == ""


def test_scopes_are_the_full_resource_names_the_program_grants_on() -> None:
    member = {"role": "r", "member": AGENT}
    assert gcp.BucketIamMember().binding({**member, "bucket": "b/x"}) == Binding(
        "//storage.googleapis.com/projects/_/buckets/x", "r", AGENT
    )
    assert gcp.DicomStoreIamMember().binding({**member, "dicomStoreId": "p/l/d/s"}) == Binding(
        "//healthcare.googleapis.com/projects/p/locations/l/datasets/d/dicomStores/s", "r", AGENT
    )
    topic = {**member, "topic": "projects/p/topics/t", "project": "q"}
    assert gcp.TopicIamMember().binding(topic) == Binding(
        "//pubsub.googleapis.com/projects/p/topics/t", "r", AGENT
    )


# --- faults ------------------------------------------------------------------------------------


def test_a_fault_fails_the_first_creates_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(common.STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(common.FAULTS_ENV, json.dumps([{"name": "store", "times": 2}]))
    store_urn = urn(STORE, "store")
    for _ in range(2):
        with pytest.raises(StandinError) as raised:
            gcp_provider().create(store_urn, STORE_INPUTS, preview=False)
        assert str(raised.value) == (
            "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
            "(projectID:p-1, datasetID:ds), please add the required bigquery.dataEditor role to "
            "your project's service account"
        )
    identifier, _ = gcp_provider().create(store_urn, STORE_INPUTS, preview=False)
    assert identifier.endswith("/dicomStores/dicom-dev")
    assert common.attempts(tmp_path) == {store_urn: 3}
    # A preview never counts as an attempt.
    gcp_provider().create(store_urn, STORE_INPUTS, preview=True)
    assert common.attempts(tmp_path) == {store_urn: 3}


def test_a_fault_without_type_spares_resources_without_a_modelled_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "dicom-bq-alerts-export_errors-archive"
    monkeypatch.setenv(common.STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(common.FAULTS_ENV, json.dumps([{"name": name, "times": 1}]))
    provider = gcp_provider()
    metric = {"name": "dicom_bq/x", "filter": "severity>=ERROR"}
    provider.create(urn("gcp:logging/metric:Metric", name), metric, preview=False)
    policy = {
        "displayName": "p",
        "combiner": "OR",
        "conditions": [
            {
                "displayName": "c",
                "conditionThreshold": {
                    "filter": 'metric.type="logging.googleapis.com/user/dicom_bq/x" AND a="b"'
                },
            }
        ],
    }
    with pytest.raises(
        StandinError,
        match=r"Error 404: Cannot find metric\(s\) that match type = "
        r'"logging.googleapis.com/user/dicom_bq/x"\. If a metric',
    ):
        provider.create(urn("gcp:monitoring/alertPolicy:AlertPolicy", name), policy, False)
    # A store without streams has no BigQuery check at create: no fault.
    monkeypatch.setenv(common.FAULTS_ENV, json.dumps([{"name": "s", "times": 1}]))
    plain = {k: v for k, v in STORE_INPUTS.items() if k != "streamConfigs"}
    provider.create(urn(STORE, "s"), plain, preview=False)


def test_a_typed_fault_uses_its_message_and_faults_need_a_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = {"name": "ds", "times": 1, "type": "Dataset", "message": "boom"}
    monkeypatch.setenv(common.FAULTS_ENV, json.dumps([fault]))
    with pytest.raises(StandinError, match=common.STATE_DIR_ENV):
        gcp_provider().create(urn(DATASET, "ds"), DATASET_INPUTS, preview=False)
    monkeypatch.setenv(common.STATE_DIR_ENV, str(tmp_path))
    with pytest.raises(StandinError, match=r"^boom$"):
        gcp_provider().create(urn(DATASET, "ds"), DATASET_INPUTS, preview=False)


# --- plugins on disk and on the wire -----------------------------------------------------------


def test_install_names_the_sdks_versions(tmp_path: Path) -> None:
    made = install.install(tmp_path)
    gcp_meta = json.loads(
        (
            Path(resource_schema(gcp.Service.token).source).parents[1] / "pulumi-plugin.json"
        ).read_text()
    )
    names = sorted(p.parent.name for p in made)
    assert names == [f"resource-gcp-v{gcp_meta['version']}", "resource-time-v0.1.1"]
    for executable in made:
        assert executable.name == "pulumi-resource-" + executable.parent.name.split("-")[1]
        assert executable.stat().st_mode & 0o111
        assert not executable.parent.with_name(executable.parent.name + ".partial").exists()
        assert sys.executable in executable.read_text()


def test_the_installed_plugin_serves_grpc(tmp_path: Path) -> None:
    (executable,) = [p for p in install.install(tmp_path) if p.name.endswith("-gcp")]
    process = subprocess.Popen(
        [str(executable), "127.0.0.1:1"], stdout=subprocess.PIPE, text=True, cwd="/"
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            assert stub.GetPluginInfo(empty_pb2.Empty()).version == "10.2.0"
            stub.Configure(provider_pb2.ConfigureRequest(args=to_struct({"project": "p"})))
            resource_urn = urn("gcp:projects/serviceIdentity:ServiceIdentity", "agent")
            answer = stub.Create(
                provider_pb2.CreateRequest(
                    urn=resource_urn, properties=to_struct({"service": "healthcare.googleapis.com"})
                )
            )
            assert answer.id == "projects/p/services/healthcare.googleapis.com"
            assert to_plain(answer.properties)["email"].startswith("service-")
            with pytest.raises(grpc.RpcError) as raised:
                stub.Create(provider_pb2.CreateRequest(urn=urn("gcp:x/y:Z", "z")))
            assert "does not model gcp:x/y:Z" in raised.value.details()
    finally:
        process.kill()
        process.wait()
