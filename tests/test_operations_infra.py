"""Alerts on the Healthcare API's error logs and the nightly snapshot export, as the program plans
them: every store covered, the scheduler's request as Google's discovery documents define it,
the snapshot account's grants in the one grants list, the policy rules and preflight on them."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from dicom_bq.flows.preflight import needed_permissions
from dicom_bq.infra.components import alerts
from dicom_bq.infra.policy_rules import RULES, is_snapshot_account
from dicom_bq.security.checks import check_plan
from dicom_bq.security.review import review_document
from dicom_bq.security.roles import from_snapshot
from dicom_bq.stack.plan import Plan, PlannedResource, plan_settings
from dicom_bq.vocabulary.contract import OutputNames, StackOutputs
from dicom_bq.vocabulary.settings import SettingsError, parse_settings
from tests.conftest import base_settings, cached_plan
from tests.fakes.discovery import document, schema_problems
from tests.stacks import operations_stack

STORES = ("clinical", "archive")
DATASET = "projects/dicom-src-test/locations/us-central1/datasets/imaging"


def of_type(plan: Plan, suffix: str) -> list[PlannedResource]:
    return [r for r in plan.custom_resources() if r.type.endswith(suffix)]


def by_name(plan: Plan, name: str) -> PlannedResource:
    return next(r for r in plan.resources if r.name == name)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return cached_plan("operations")


# -- the nightly snapshot ---------------------------------------------------------------------


def test_scheduler_body_is_an_export_request_of_the_healthcare_v1_discovery_document(
    plan: Plan,
) -> None:
    jobs = of_type(plan, "cloudscheduler/job:Job")
    assert len(jobs) == len(STORES)
    for job, store in zip(sorted(jobs, key=lambda j: j.name), sorted(STORES), strict=True):
        target = job.inputs["httpTarget"]
        body = json.loads(base64.b64decode(target["body"]))  # HttpTarget.body: base64
        assert schema_problems("healthcare", "v1", "ExportDicomDataRequest", body) == []
        assert body == {
            "bigqueryDestination": {
                "tableUri": f"bq://dicom-src-test.dicom_metadata.dicom_snapshot_{store}",
                "writeDisposition": "WRITE_TRUNCATE",
            }
        }
        assert target["httpMethod"] == "POST"
        assert (
            target["uri"]
            == f"https://healthcare.googleapis.com/v1/{DATASET}/dicomStores/{store}:export"
        )


def test_scheduler_uri_is_the_discovery_documents_export_path(plan: Plan) -> None:
    doc = document("healthcare", "v1")
    method = doc["resources"]["projects"]["resources"]["locations"]["resources"]["datasets"][
        "resources"
    ]["dicomStores"]["methods"]["export"]
    assert method["httpMethod"] == "POST"
    pattern = re.escape(doc["rootUrl"]) + re.sub(
        r"\\\{[A-Za-z]+\\\}", "[^/]+", re.escape(method["flatPath"])
    )
    for job in of_type(plan, "cloudscheduler/job:Job"):
        assert re.fullmatch(pattern, job.inputs["httpTarget"]["uri"]), job.inputs["httpTarget"]


def test_job_runs_once_as_the_snapshot_account_with_an_oauth_token(plan: Plan) -> None:
    account = of_type(plan, "serviceaccount/account:Account")[0]
    email = f"{account.inputs['accountId']}@dicom-src-test.iam.gserviceaccount.com"
    for job in of_type(plan, "cloudscheduler/job:Job"):
        assert job.inputs["retryConfig"] == {"retryCount": 0}
        assert job.inputs["httpTarget"]["oauthToken"] == {
            "serviceAccountEmail": email,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
        }
        assert job.inputs["schedule"] == "0 2 * * *"
        assert job.inputs["timeZone"] == "Europe/Paris"  # the stack's timeZone by default
        assert job.inputs["region"] == "us-central1"
        # The account holds export on the store before the job can fire, and Cloud Scheduler's
        # agent may mint its token, the grant given time to propagate.
        assert any(d.startswith("dicom-bq-snapshot-snapshot-export-") for d in job.depends_on)
        assert "dicom-bq-snapshot-agent-scheduler-token-creator" in job.depends_on
        assert "dicom-bq-snapshot-agent-iam-propagation" in job.depends_on


SCHEDULER_AGENT = (
    "serviceAccount:service-111122223333@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
)


def test_scheduler_agent_exists_and_may_mint_the_snapshot_accounts_token_only(
    plan: Plan,
) -> None:
    """https://cloud.google.com/scheduler/docs/http-target-auth: the agent generates the job's
    token for the account; projects that enabled the API before 2019-03-19 lack the automatic
    grant, so the stack makes the agent exist and grants it Token Creator on that account."""
    identities = {r.inputs["service"]: r for r in of_type(plan, "serviceIdentity:ServiceIdentity")}
    scheduler = identities["cloudscheduler.googleapis.com"]
    assert scheduler.inputs["project"] == "dicom-src-test"
    assert "dicom-bq-apis-cloudscheduler" in scheduler.depends_on
    account = of_type(plan, "serviceaccount/account:Account")[0]
    email = f"{account.inputs['accountId']}@dicom-src-test.iam.gserviceaccount.com"
    (grant,) = of_type(plan, "serviceaccount/iAMMember:IAMMember")
    assert grant.inputs == {
        "serviceAccountId": f"projects/dicom-src-test/serviceAccounts/{email}",
        "role": "roles/iam.serviceAccountTokenCreator",
        "member": SCHEDULER_AGENT,
    }
    assert {scheduler.name, account.name} <= set(grant.depends_on)
    (wait,) = [
        r
        for r in of_type(plan, "sleep:Sleep")
        if r.name == "dicom-bq-snapshot-agent-iam-propagation"
    ]
    # The agent's address is its ServiceIdentity's answer: the wait's triggers carry it.
    assert wait.depends_on == sorted([grant.name, scheduler.name])
    # Nothing else in the stack is granted to the agent.
    assert [
        r.name for r in plan.custom_resources() if r.inputs.get("member") == SCHEDULER_AGENT
    ] == [grant.name]


def test_scheduler_host_follows_the_universe_domain() -> None:
    sovereign = plan_settings(
        "sovereign",
        base_settings(
            universeDomain="example-sovereign.goog",
            agentIamDomain="example-system.iam.gserviceaccount.com",
            snapshotSchedule="30 1 * * 1-5",
            snapshotTimeZone="Europe/Berlin",
        ),
    )
    (job,) = of_type(sovereign, "cloudscheduler/job:Job")
    assert job.inputs["httpTarget"]["uri"].startswith(
        "https://healthcare.example-sovereign.goog/v1/"
    )
    assert job.inputs["timeZone"] == "Europe/Berlin"


def test_the_custom_role_holds_only_export_and_is_granted_on_each_store_alone(plan: Plan) -> None:
    (role,) = of_type(plan, "projects/iAMCustomRole:IAMCustomRole")
    assert role.inputs["permissions"] == ["healthcare.dicomStores.export"]
    members = of_type(plan, "dicomStoreIamMember:DicomStoreIamMember")
    role_name = f"projects/dicom-src-test/roles/{role.inputs['roleId']}"
    assert sorted(m.inputs["dicomStoreId"] for m in members) == sorted(
        f"dicom-src-test/us-central1/imaging/{store}" for store in STORES
    )
    assert {m.inputs["role"] for m in members} == {role_name}
    assert all(m.delete_before_replace for m in members)
    # No other IAM resource names the snapshot account.
    others = [
        r
        for r in plan.custom_resources()
        if is_snapshot_account(str(r.inputs.get("member", ""))) and r not in members
    ]
    assert others == []


def test_snapshot_grants_are_in_the_one_grants_list_with_their_reason(plan: Plan) -> None:
    snapshot = [g for g in plan.grants if is_snapshot_account(g["member"])]
    assert sorted(g["scope"] for g in snapshot) == sorted(
        f"//healthcare.googleapis.com/{DATASET}/dicomStores/{store}" for store in STORES
    )
    assert all("dicomStores.export" in g["reason"] for g in snapshot)
    # Cloud Scheduler's agent: Token Creator on the snapshot account, with its reason.
    (scheduler,) = [g for g in plan.grants if g["member"] == SCHEDULER_AGENT]
    email = snapshot[0]["member"].removeprefix("serviceAccount:")
    assert scheduler["role"] == "roles/iam.serviceAccountTokenCreator"
    assert scheduler["scope"] == (
        f"//iam.googleapis.com/projects/dicom-src-test/serviceAccounts/{email}"
    )
    assert "http-target-auth" in scheduler["reason"]
    assert "roles/cloudscheduler.serviceAgent" in scheduler["reason"]
    # The agent's BigQuery grants are unchanged: the export writes as the agent.
    agent = {g["role"] for g in plan.grants if "gcp-sa-healthcare" in g["member"]}
    assert agent == {"roles/bigquery.dataEditor", "roles/bigquery.jobUser"}


def test_review_lists_the_snapshot_grant(plan: Plan) -> None:
    document_ = review_document(plan, check_plan(plan, plan.settings), from_snapshot)  # type: ignore[arg-type]
    listed = [g for g in document_["grants"] if is_snapshot_account(g["member"])]
    assert len(listed) == len(STORES)
    assert document_["policy"]["passed"]


def test_outputs_name_the_snapshot_and_the_alert_policies(plan: Plan) -> None:
    outputs = StackOutputs.parse(plan.outputs)
    assert (
        outputs.snapshot_table_uri == "bq://dicom-src-test.dicom_metadata.dicom_snapshot_clinical"
    )
    # Each store's own table in its dicomStores entry; the top-level one stays the first's.
    assert [(s.store_id, s.snapshot_table) for s in outputs.stores] == [
        (store, f"bq://dicom-src-test.dicom_metadata.dicom_snapshot_{store}") for store in STORES
    ]
    assert outputs.snapshot_schedule == {"schedule": "0 2 * * *", "timeZone": "Europe/Paris"}
    policies = plan.outputs[OutputNames.ALERT_POLICIES]
    assert sorted(policies) == sorted(
        r.inputs["displayName"] for r in of_type(plan, "alertPolicy:AlertPolicy")
    )


def test_preflight_asks_for_act_as_and_each_create(plan: Plan) -> None:
    asked = {(n.resource, n.permission) for n in needed_permissions(plan)}
    for permission in (
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.create",
        "iam.roles.create",
        "cloudscheduler.jobs.create",
        "healthcare.dicomStores.setIamPolicy",
        "logging.logMetrics.create",
        "monitoring.alertPolicies.create",
        "monitoring.notificationChannels.create",
    ):
        assert ("projects/dicom-src-test", permission) in asked


def test_apis_for_alerts_and_scheduler_are_enabled_and_kept(plan: Plan) -> None:
    services = {r.inputs["service"]: r for r in of_type(plan, "projects/service:Service")}
    for api in ("logging", "monitoring", "cloudscheduler", "iam"):
        assert services[f"{api}.googleapis.com"].inputs["disableOnDestroy"] is False
    assert "dicom-bq-apis-cloudscheduler" in by_name(plan, "dicom-bq-snapshot-account").depends_on


# -- alerts -----------------------------------------------------------------------------------


def test_each_store_has_an_export_error_alert_and_streaming_ones_a_stream_alert(
    plan: Plan,
) -> None:
    metrics = {r.inputs["name"]: r for r in of_type(plan, "logging/metric:Metric")}
    assert sorted(m for m in metrics if "snapshot_job" not in m) == [
        "dicom_bq/export_errors/us-central1/imaging/archive",
        "dicom_bq/export_errors/us-central1/imaging/clinical",
        "dicom_bq/stream_errors/us-central1/imaging/clinical",
    ]
    export = metrics["dicom_bq/export_errors/us-central1/imaging/archive"].inputs["filter"]
    assert 'resource.type="healthcare_dicom_store"' in export
    # Two stacks whose datasets share an ID in different locations do not count each other's.
    assert 'resource.labels.location="us-central1"' in export
    assert 'resource.labels.dataset_id="imaging"' in export
    assert 'resource.labels.dicom_store_id="archive"' in export
    assert f'jsonPayload.@type="{alerts.EXPORT_ENTRY}"' in export
    assert "logName" not in export  # the log IDs are not documented
    stream = metrics["dicom_bq/stream_errors/us-central1/imaging/clinical"].inputs["filter"]
    assert "DicomStreamLogEntry" in stream


def test_alert_policies_wait_for_their_metrics_and_notify_every_channel(plan: Plan) -> None:
    (wait,) = [r for r in of_type(plan, "sleep:Sleep") if r.name.endswith("metric-propagation")]
    metrics = of_type(plan, "logging/metric:Metric")
    assert sorted(wait.depends_on) == sorted(m.name for m in metrics)
    assert sorted(wait.inputs["triggers"]) == sorted(m.inputs["name"] for m in metrics)
    policies = of_type(plan, "alertPolicy:AlertPolicy")
    assert len(policies) == len(metrics)
    for policy in policies:
        assert wait.name in policy.depends_on
        (condition,) = policy.inputs["conditions"]
        threshold = condition["conditionThreshold"]
        assert threshold["filter"].startswith('metric.type="logging.googleapis.com/user/dicom_bq/')
        resource = (
            "cloud_scheduler_job"
            if "snapshot_job" in threshold["filter"]
            else "healthcare_dicom_store"
        )
        assert f'resource.type="{resource}"' in threshold["filter"]
        channels = policy.inputs["notificationChannels"]
        assert "projects/dicom-src-test/notificationChannels/4242" in channels
        assert len(channels) == 2  # the email channel's name comes from Google at creation
    (email,) = of_type(plan, "notificationChannel:NotificationChannel")
    assert email.inputs["type"] == "email"
    assert email.inputs["labels"] == {"email_address": "oncall@example.org"}


def test_a_failed_snapshot_job_attempt_raises_its_own_alert(plan: Plan) -> None:
    """A refused request (403, 429, 5xx) starts no export, so no export error is logged: each
    job's failed attempts (Cloud Scheduler's AttemptFinished entries at ERROR) are counted."""
    jobs = {j.inputs["name"]: j for j in of_type(plan, "cloudscheduler/job:Job")}
    metrics = {
        r.inputs["name"]: r
        for r in of_type(plan, "logging/metric:Metric")
        if "snapshot_job" in r.inputs["name"]
    }
    assert sorted(metrics) == [
        f"dicom_bq/snapshot_job_failures/us-central1/imaging/{store}" for store in sorted(STORES)
    ]
    for store in STORES:
        (job_id,) = [name for name in jobs if name.endswith(f"-{store}")]
        log_filter = metrics[f"dicom_bq/snapshot_job_failures/us-central1/imaging/{store}"].inputs[
            "filter"
        ]
        assert log_filter == (
            'resource.type="cloud_scheduler_job" '
            f'AND resource.labels.location="{jobs[job_id].inputs["region"]}" '
            f'AND resource.labels.job_id="{job_id}" '
            'AND jsonPayload.@type="type.googleapis.com/google.cloud.scheduler.logging.'
            'AttemptFinished" AND severity>=ERROR'
        )
    policies = [
        p
        for p in of_type(plan, "alertPolicy:AlertPolicy")
        if "snapshot_job" in p.inputs["conditions"][0]["conditionThreshold"]["filter"]
    ]
    assert len(policies) == len(STORES)
    assert all(
        "projects/dicom-src-test/notificationChannels/4242" in p.inputs["notificationChannels"]
        for p in policies
    )


def test_no_job_failure_alert_without_a_schedule_nor_without_alerts() -> None:
    alerts_only = plan_settings("alerts-only", base_settings(alertEmails=["a@example.org"]))
    assert not any(
        "snapshot_job" in m.inputs["name"] for m in of_type(alerts_only, "logging/metric:Metric")
    )
    schedule_only = plan_settings("schedule-only", base_settings(snapshotSchedule="0 2 * * *"))
    assert of_type(schedule_only, "logging/metric:Metric") == []


def test_metric_names_fall_back_to_a_hash_where_ids_do_not_fit() -> None:
    name = alerts.metric_name(
        kind="export_errors", location="eu", dataset_id="bildgebung", store_id="röntgen"
    )
    assert re.fullmatch(r"dicom_bq/export_errors/[0-9a-f]{16}", name)


def test_no_operations_resources_without_the_settings() -> None:
    plain = cached_plan("dev")
    kinds = {r.type for r in plain.custom_resources()}
    assert not kinds & {
        "gcp:cloudscheduler/job:Job",
        "gcp:logging/metric:Metric",
        "gcp:monitoring/alertPolicy:AlertPolicy",
        "gcp:serviceaccount/account:Account",
    }
    assert plain.outputs[OutputNames.ALERT_POLICIES] == []
    assert plain.outputs[OutputNames.SNAPSHOT_TABLE] is None


def test_alerts_on_with_an_existing_channel_only() -> None:
    only_channel = plan_settings(
        "channel", base_settings(alertChannels=["projects/dicom-src-test/notificationChannels/1"])
    )
    assert of_type(only_channel, "notificationChannel:NotificationChannel") == []
    (policy,) = of_type(only_channel, "alertPolicy:AlertPolicy")
    assert policy.inputs["notificationChannels"] == [
        "projects/dicom-src-test/notificationChannels/1"
    ]


# -- policy rules on the real program ---------------------------------------------------------


def _with_extra(plan: Plan, extra: PlannedResource) -> list[str]:
    plan.resources.append(extra)
    try:
        return [f.rule for f in check_plan(plan, plan.settings)]  # type: ignore[arg-type]
    finally:
        plan.resources.remove(extra)


def test_a_broader_role_or_scope_for_the_snapshot_account_fails_the_check() -> None:
    plan = plan_settings("ops-rules", operations_stack())
    assert check_plan(plan, plan.settings) == []  # type: ignore[arg-type]
    member = next(g["member"] for g in plan.grants if is_snapshot_account(g["member"]))
    viewer = PlannedResource(
        type="gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
        name="viewer",
        custom=True,
        parent=None,
        protect=False,
        retain_on_delete=False,
        depends_on=[],
        inputs={
            "dicomStoreId": "dicom-src-test/us-central1/imaging/clinical",
            "role": "roles/healthcare.dicomViewer",
            "member": member,
        },
    )
    assert "DBQ014" in _with_extra(plan, viewer)
    role = next(g["role"] for g in plan.grants if is_snapshot_account(g["member"]))
    on_dataset = PlannedResource(
        type="gcp:healthcare/datasetIamMember:DatasetIamMember",
        name="on-dataset",
        custom=True,
        parent=None,
        protect=False,
        retain_on_delete=False,
        depends_on=[],
        inputs={"datasetId": DATASET, "role": role, "member": member},
    )
    assert "DBQ015" in _with_extra(plan, on_dataset)
    (custom,) = of_type(plan, "projects/iAMCustomRole:IAMCustomRole")
    custom.inputs["permissions"] = [
        *custom.inputs["permissions"],
        "healthcare.dicomStores.dicomWebRead",
    ]
    assert "DBQ014" in [f.rule for f in check_plan(plan, plan.settings)]  # type: ignore[arg-type]


def test_the_rules_are_listed() -> None:
    assert {"DBQ014", "DBQ015"} <= {rule.id for rule in RULES}


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        ({"snapshotSchedule": "0 24 * * *"}, "snapshotSchedule", "hour field"),
        ({"snapshotSchedule": "nightly"}, "snapshotSchedule", "fields"),
        (
            {"snapshotSchedule": "0 2 * * *", "snapshotTable": "patients"},
            "snapshotTable",
            "WRITE_TRUNCATE",
        ),
        (
            {
                "snapshotSchedule": "0 2 * * *",
                "snapshotTable": "dicom_snapshot_live",
                "streamTables": ["dicom_snapshot_live"],
            },
            "snapshotTable",
            "stream table",
        ),
        ({"snapshotTable": "dicom_snapshot"}, "snapshotTable", "snapshotSchedule is not"),
        ({"snapshotTimeZone": "Europe/Paris"}, "snapshotTimeZone", "snapshotSchedule is not"),
        (
            {"snapshotSchedule": "0 2 * * *", "snapshotTimeZone": "Mars/Olympus"},
            "snapshotTimeZone",
            "IANA",
        ),
        ({"alertEmails": ["oncall"]}, "alertEmails", "address"),
        ({"alertEmails": ["a@example.org", "a@example.org"]}, "alertEmails", "more than once"),
        ({"alertChannels": ["4242"]}, "alertChannels", "notificationChannels/ID"),
    ],
)
def test_bad_operations_settings_are_refused_naming_their_key(
    overrides: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(**overrides))
    message = str(caught.value)
    assert f"dicom-bq:{key}" in message
    assert says in message


def test_the_snapshot_table_defaults_to_the_tools_own() -> None:
    settings = parse_settings(base_settings(snapshotSchedule="0 2 * * *"))
    assert settings.snapshot_tables == {"dicom": "dicom_snapshot"}
    assert not settings.alerting
