"""flows/preflight.py held to its contract directly (issue 19, mutation testing): which
permission each planned change is tested for and where, how each resource Google describes is
judged, and what the report says and tells the user to run. Plans are built by hand here (no
Pulumi run), so each test is milliseconds; tests/test_preflight.py runs the whole flow against
the loopback fake."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dicom_bq.clients.discovery import ApiCallError
from dicom_bq.flows import preflight
from dicom_bq.flows.preflight import (
    CREATE_PERMISSION,
    ROLE_FOR,
    NeededPermission,
    PreflightCheck,
    PreflightReport,
    _bucket_found,
    _grant_fix,
    _import_command,
    _key_found,
    _missing,
    _planned_agent,
    _together,
    needed_permissions,
    report_lines,
)
from dicom_bq.stack.plan import Plan, PlannedInvoke, PlannedResource
from dicom_bq.vocabulary.scopes import SCOPE_KINDS

# Imported here, not in the tests: tests/test_preflight.py plans the prod stack once at import, so
# a worker forked after collection (scripts/mutation) finds it planned.
from tests.test_preflight import VARIABLES, ready_for

AGENT = "serviceAccount:service-1@gcp-sa-healthcare.iam.gserviceaccount.com"
KEY = "projects/kms-project/locations/europe-west4/keyRings/ring/cryptoKeys/key"
KEY_PARTS = {
    "project": "kms-project",
    "location": "europe-west4",
    "ring": "ring",
    "key": "key",
    "name": KEY,
}


def resource(
    type_: str, resource_name: str, custom: bool = True, parent: str | None = None, **inputs: Any
) -> PlannedResource:
    return PlannedResource(
        type=type_,
        name=resource_name,
        custom=custom,
        parent=parent,
        protect=False,
        retain_on_delete=False,
        depends_on=[],
        inputs=inputs,
    )


def plan(*resources: PlannedResource, invokes: list[PlannedInvoke] | None = None) -> Plan:
    return Plan(stack="s", resources=list(resources), outputs={}, invokes=invokes or [])


def needs(*resources: PlannedResource, **kwargs: Any) -> list[tuple[str, str, str]]:
    return [(n.scope, n.permission, n.why) for n in needed_permissions(plan(*resources, **kwargs))]


PROJECT = "//cloudresourcemanager.googleapis.com/projects/p-one"


# -- what each change needs, and where it is tested --------------------------------------------


def test_creates_need_their_permission_on_their_project() -> None:
    assert needs(
        resource("gcp:healthcare/dataset:Dataset", "hc", project="p-one", location="l", name="d"),
        resource(
            "gcp:healthcare/dicomStore:DicomStore",
            "store",
            dataset="projects/p-two/locations/l/datasets/d",
            name="s",
        ),
        resource("gcp:bigquery/dataset:Dataset", "bq", project="p-three", datasetId="x"),
    ) == [
        (PROJECT, "healthcare.datasets.create", "hc"),
        (
            "//cloudresourcemanager.googleapis.com/projects/p-two",
            "healthcare.dicomStores.create",
            "store",
        ),
        (
            "//cloudresourcemanager.googleapis.com/projects/p-three",
            "bigquery.datasets.create",
            "bq",
        ),
    ]


def test_a_store_of_any_provider_version_needs_the_store_create() -> None:
    beta = resource(
        "gcp-beta:healthcare/dicomStore:DicomStore",
        "store",
        dataset="projects/p-one/locations/l/datasets/d",
    )
    assert needs(beta) == [(PROJECT, "healthcare.dicomStores.create", "store")]


@pytest.mark.parametrize(("type_", "permission"), sorted(CREATE_PERMISSION.items()))
def test_each_optional_part_needs_its_create_permission(type_: str, permission: str) -> None:
    assert needs(resource(type_, "part", project="p-one")) == [(PROJECT, permission, "part")]


def test_a_job_minting_a_token_also_needs_act_as_on_its_project() -> None:
    job = "gcp:cloudscheduler/job:Job"
    with_token = resource(job, "j", project="p-one", httpTarget={"oauthToken": {"x": 1}})
    assert needs(with_token) == [
        (PROJECT, "cloudscheduler.jobs.create", "j"),
        (PROJECT, "iam.serviceAccounts.actAs", "j"),
    ]
    plain = resource(job, "j", project="p-one", httpTarget={"uri": "https://x"})
    assert needs(plain) == [(PROJECT, "cloudscheduler.jobs.create", "j")]
    no_target = resource(job, "j", project="p-one", httpTarget=None)
    assert needs(no_target) == [(PROJECT, "cloudscheduler.jobs.create", "j")]


def test_the_bigquery_service_account_lookup_needs_jobs_create() -> None:
    lookup = PlannedInvoke(
        "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount", {"project": "p-one"}, {}
    )
    other = PlannedInvoke("gcp:organizations/getProject:getProject", {"projectId": "p-one"}, {})
    assert needs(invokes=[other, lookup]) == [(PROJECT, "bigquery.jobs.create", lookup.token)]


def test_grants_need_the_policy_permissions_where_their_kind_is_tested() -> None:
    bucket = resource(
        "gcp:storage/bucketIAMMember:BucketIAMMember", "b", bucket="bkt-one", role="r", member="m"
    )
    dataset = resource(
        "gcp:bigquery/datasetIamMember:DatasetIamMember", "d", project="p-one", datasetId="x"
    )
    project = resource("gcp:projects/iAMMember:IAMMember", "pr", project="p-one")
    assert needs(bucket, dataset, project) == [
        (
            "//storage.googleapis.com/projects/_/buckets/bkt-one",
            "storage.buckets.getIamPolicy",
            "b",
        ),
        (
            "//storage.googleapis.com/projects/_/buckets/bkt-one",
            "storage.buckets.setIamPolicy",
            "b",
        ),
        # A dataset the stack creates is its creator's: nothing more to test (tested nowhere).
        (PROJECT, "resourcemanager.projects.getIamPolicy", "pr"),
        (PROJECT, "resourcemanager.projects.setIamPolicy", "pr"),
    ]


def test_components_and_other_resources_need_nothing() -> None:
    assert (
        needs(
            resource("gcp:healthcare/dataset:Dataset", "c", custom=False, project="p-one"),
            resource("time:index/sleep:Sleep", "wait"),
            resource("gcp:projects/service:Service", "api", project="p-one", service="x"),
        )
        == []
    )


def test_where_a_kinds_grants_are_tested() -> None:
    store = "//healthcare.googleapis.com/projects/p-one/locations/l/datasets/d/dicomStores/s"
    assert preflight.tested_scope(SCOPE_KINDS["dicom_store"], store) == PROJECT
    bucket = "//storage.googleapis.com/projects/_/buckets/bkt-one"
    assert preflight.tested_scope(SCOPE_KINDS["bucket"], bucket) == bucket
    dataset = "//bigquery.googleapis.com/projects/p-one/datasets/x"
    assert preflight.tested_scope(SCOPE_KINDS["bigquery_dataset"], dataset) is None


def test_a_needed_permission_names_its_resource_as_the_report_does() -> None:
    assert NeededPermission(PROJECT, "x", "y").resource == "projects/p-one"
    bucket = "//storage.googleapis.com/projects/_/buckets/bkt-one"
    assert NeededPermission(bucket, "x", "y").resource == "buckets/bkt-one"
    key = f"//cloudkms.googleapis.com/{KEY}"
    assert NeededPermission(key, "x", "y").resource == KEY


def test_the_fix_roles_hold_their_permissions() -> None:
    assert ROLE_FOR["healthcare.dicomStores.create"] == "roles/healthcare.dicomStoreAdmin"
    assert ROLE_FOR["storage.buckets.setIamPolicy"] == "roles/storage.admin"
    assert ROLE_FOR["resourcemanager.projects.setIamPolicy"] == (
        "roles/resourcemanager.projectIamAdmin"
    )


# -- how the fix is worded ------------------------------------------------------------------------


def test_items_are_said_together() -> None:
    assert _together(["a"]) == "a"
    assert _together(["a", "b"]) == "a and b"
    assert _together(["a", "b", "c"]) == "a, b and c"


def test_the_fix_asks_for_the_fewest_roles_at_once() -> None:
    assert _grant_fix("projects/p", ["healthcare.datasets.create"]) == (
        "ask for roles/healthcare.datasetAdmin on projects/p (it holds healthcare.datasets.create)"
    )
    assert _grant_fix("projects/p", ["healthcare.datasets.create", "bigquery.datasets.create"]) == (
        "ask for roles/bigquery.user and roles/healthcare.datasetAdmin on projects/p (together "
        "they hold bigquery.datasets.create, healthcare.datasets.create)"
    )


def test_a_permission_no_role_holds_asks_for_a_custom_role() -> None:
    from dicom_bq.security.roles import deployer_roles_date

    date = deployer_roles_date()
    assert _grant_fix("projects/p", ["made.up.one"]) == (
        f"no predefined role in dicom-bq's role data of {date} holds made.up.one: ask for a "
        "custom role with it on projects/p"
    )
    assert _grant_fix("projects/p", ["made.up.one", "made.up.two"]).endswith(
        "holds made.up.one, made.up.two: ask for a custom role with them on projects/p"
    )
    assert _grant_fix("projects/p", ["made.up.one", "healthcare.datasets.create"]) == (
        "ask for roles/healthcare.datasetAdmin on projects/p (it holds "
        f"healthcare.datasets.create); no predefined role in dicom-bq's role data of {date} "
        "holds made.up.one: ask for a custom role with it on projects/p"
    )


# -- how what exists is judged -----------------------------------------------------------------


def test_a_bucket_is_fine_wherever_it_is() -> None:
    assert _bucket_found("gs://b", {}, {"location": "EU"}) == PreflightCheck(
        "resource", "gs://b", "ok", "exists in EU"
    )
    assert _bucket_found("gs://b", {}, {}) == PreflightCheck(
        "resource", "gs://b", "ok", "exists (its location was not in Google's answer)"
    )


def test_an_enabled_symmetric_key_is_fine() -> None:
    key = {"purpose": "ENCRYPT_DECRYPT", "primary": {"state": "ENABLED"}}
    assert _key_found(KEY, KEY_PARTS, key) == PreflightCheck(
        "resource", KEY, "ok", "ENCRYPT_DECRYPT, enabled, in europe-west4"
    )


def test_a_key_of_another_purpose_fails() -> None:
    signing = {"purpose": "ASYMMETRIC_SIGN", "primary": {"state": "ENABLED"}}
    assert _key_found(KEY, KEY_PARTS, signing) == PreflightCheck(
        "resource",
        KEY,
        "fail",
        "its purpose is ASYMMETRIC_SIGN; CMEK needs a symmetric ENCRYPT_DECRYPT key",
        "create a key with --purpose encryption and point the stack at it",
    )
    unknown = _key_found(KEY, KEY_PARTS, {"primary": {"state": "ENABLED"}})
    assert unknown.status == "fail"
    assert unknown.detail == (
        "Google's answer gives no purpose; CMEK needs a symmetric ENCRYPT_DECRYPT key"
    )


def test_a_key_whose_primary_version_is_not_enabled_fails_with_the_enable_command() -> None:
    disabled = {"purpose": "ENCRYPT_DECRYPT", "primary": {"state": "DISABLED"}}
    check = _key_found(KEY, KEY_PARTS, disabled)
    assert check == PreflightCheck(
        "resource",
        KEY,
        "fail",
        "its primary version is DISABLED: the dataset cannot be encrypted",
        "gcloud kms keys versions enable VERSION --key key --keyring ring --location "
        "europe-west4 --project kms-project",
    )
    none = _key_found(KEY, KEY_PARTS, {"purpose": "ENCRYPT_DECRYPT"})
    assert none.status == "fail"
    assert none.detail == "it has no primary version: the dataset cannot be encrypted"
    empty = _key_found(KEY, KEY_PARTS, {"purpose": "ENCRYPT_DECRYPT", "primary": None})
    assert empty.detail == none.detail


def test_a_missing_scope_fails_and_an_unreadable_one_warns() -> None:
    gone = _missing("gs://b", ApiCallError(404, "notFound", "no such bucket"), "gcloud create")
    assert gone == PreflightCheck(
        "resource",
        "gs://b",
        "fail",
        "does not exist: the stack grants a role on it",
        "gcloud create",
    )
    hidden = _missing("gs://b", ApiCallError(403, "forbidden", "x" * 300), "gcloud create")
    assert hidden == PreflightCheck(
        "resource",
        "gs://b",
        "warn",
        f"could not read it (403 forbidden: {'x' * 200})",
        "check that it exists and that you may read it",
    )


# -- the import command for what exists already ------------------------------------------------


def test_the_import_command_names_the_parent_and_protection() -> None:
    parent = resource("dicom-bq:index:DicomExportPath", "path", custom=False)
    parent.urn = "urn:pulumi:s::dicom-bq::dicom-bq:index:DicomExportPath::path"
    child = resource("gcp:healthcare/dataset:Dataset", "hc", parent="path")
    child.protect = True
    made = plan(parent, child)
    assert _import_command(made, child, "projects/p/locations/l/datasets/d") == (
        "pulumi import gcp:healthcare/dataset:Dataset hc 'projects/p/locations/l/datasets/d' "
        f"--parent 'path={parent.urn}' --stack s   (or choose another ID in Pulumi.s.yaml)"
    )
    child.protect = False
    assert _import_command(made, child, "id") == (
        f"pulumi import gcp:healthcare/dataset:Dataset hc 'id' --parent 'path={parent.urn}' "
        "--protect=false --stack s   (or choose another ID in Pulumi.s.yaml)"
    )
    parent.urn = ""
    assert _import_command(made, child, "id") == (
        "pulumi import gcp:healthcare/dataset:Dataset hc 'id' --protect=false --stack s   (or "
        "choose another ID in Pulumi.s.yaml)"
    )
    orphan = resource("gcp:healthcare/dataset:Dataset", "hc", parent="elsewhere")
    orphan.protect = True
    assert _import_command(made, orphan, "id") == (
        "pulumi import gcp:healthcare/dataset:Dataset hc 'id' --stack s   (or choose another ID "
        "in Pulumi.s.yaml)"
    )


class Owners:
    def stacks_of(self, member: str) -> list[str]:
        return {"serviceAccount:a": ["dev"], "serviceAccount:b": ["dev", "prod"]}.get(member, [])


def test_a_holder_that_is_another_stacks_agent_is_named_so() -> None:
    holder = preflight._holder
    assert holder("serviceAccount:a", Owners()) == "serviceAccount:a (the agent of stack dev)"  # type: ignore[arg-type]
    assert holder("serviceAccount:b", Owners()) == (  # type: ignore[arg-type]
        "serviceAccount:b (the agent of stack dev, prod)"
    )
    assert holder("user:c@example.com", Owners()) == "user:c@example.com"  # type: ignore[arg-type]
    assert holder("serviceAccount:a", None) == "serviceAccount:a"


def test_the_planned_agent_is_a_member() -> None:
    made = plan()
    assert _planned_agent(made) is None
    made.outputs["agentEmail"] = "service-1@gcp-sa-healthcare.iam.gserviceaccount.com"
    assert _planned_agent(made) == AGENT
    made.outputs["agentEmail"] = ""
    assert _planned_agent(made) is None
    made.outputs["agentEmail"] = 12
    assert _planned_agent(made) is None


# -- the report -------------------------------------------------------------------------------


def test_a_report_with_a_failure_is_not_ok_and_says_why() -> None:
    report = PreflightReport(
        stack="prod",
        checks=[
            PreflightCheck("api", "a in p", "ok", "enabled", "never shown"),
            PreflightCheck("resource", "gs://b", "warn", "could not read", "check it"),
            PreflightCheck("permission", "projects/p", "fail", "you lack x", "ask for y"),
            PreflightCheck("existing", "d", "fail", "exists"),
        ],
        universe_text="googleapis.com (the default provider)",
    )
    assert report.ok is False
    assert report_lines(report) == [
        "universe: googleapis.com (the default provider)",
        "ok   api        a in p: enabled",
        "WARN resource   gs://b: could not read",
        "     fix: check it",
        "FAIL permission projects/p: you lack x",
        "     fix: ask for y",
        "FAIL existing   d: exists",
        "2 check(s) failed: the first `pulumi up` of prod would fail",
    ]


def test_a_report_without_failures_is_all_clear_counting_warnings() -> None:
    warned = PreflightReport(
        stack="dev",
        checks=[
            PreflightCheck("api", "a", "warn", "unknown"),
            PreflightCheck("api", "b", "warn", "unknown"),
            PreflightCheck("api", "c", "ok", "enabled"),
        ],
    )
    assert warned.ok is True
    assert report_lines(warned)[-1] == "all clear for dev (2 warning(s): read them)"
    assert report_lines(warned)[0].startswith("WARN api")
    clear = PreflightReport(stack="dev", checks=[PreflightCheck("api", "c", "ok", "enabled")])
    assert report_lines(clear) == ["ok   api        c: enabled", "all clear for dev"]
    assert PreflightReport(stack="dev").ok is True


def test_the_report_as_json() -> None:
    report = PreflightReport(
        stack="prod",
        checks=[PreflightCheck("api", "a", "fail", "off", "enable it")],
        notes=["a note"],
    )
    assert report.as_dict() == {
        "stack": "prod",
        "ok": False,
        "checks": [
            {"area": "api", "subject": "a", "status": "fail", "detail": "off", "fix": "enable it"}
        ],
        "notes": ["a note"],
    }
    report.universe = {"universeDomain": "example.goog"}
    assert report.as_dict()["universe"] == {"universeDomain": "example.goog"}
    assert list(report.as_dict()) == ["stack", "ok", "universe", "checks", "notes"]


# -- the checks against the loopback fake (tests/test_preflight.py's prod cloud) -----------------

PROD_HC = "clinical-imaging-prod"
PROD_BQ = "imaging-analytics-prod"
PROD_AGENT = "serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com"
HC_DATASET = f"projects/{PROD_HC}/locations/europe-west4/datasets/imaging-prod"
STORE_NAME = f"{HC_DATASET}/dicomStores/dicom-prod"


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], None]]:
    """Points every API preflight reads at the fake (tests/test_preflight.py, cloud_for)."""
    started: list[Any] = []

    def start(fake: Any) -> None:
        fake.start()
        started.append(fake)
        for variable in VARIABLES:
            monkeypatch.setenv(variable, fake.url)
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", fake.url.removeprefix("http://"))

    yield start
    for fake in started:
        fake.stop()


def checked(
    serve: Any,
    change: Any = None,
    *,
    owned: set[str] | None = None,
    stacks: Any = None,
    note: str = "",
) -> tuple[PreflightReport, Any]:
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.flows.preflight import run_preflight
    from tests.conftest import cached_plan

    fake = ready_for("prod")
    if change is not None:
        change(fake)
    serve(fake)
    made = cached_plan("prod")
    report = run_preflight(
        plan=made,
        connection=Connection(universe_domain="googleapis.com"),
        owned_ids=owned,
        owned_note=note,
        stacks=stacks,
    )
    assert fake.problems == []
    return report, fake


def by_subject(report: PreflightReport, area: str) -> dict[str, PreflightCheck]:
    return {c.subject: c for c in report.checks if c.area == area}


def refuse(fake: Any, needle: str, status: int = 403, reason: str = "forbidden") -> None:
    """The fake answers `status` to every request whose path holds `needle`."""
    from tests.fakes.http import Response

    handle = fake.handle

    def refusing(request: Any) -> Any:
        if needle in request.path:
            return Response.error(status, reason, f"refused {needle}")
        return handle(request)

    fake.handle = refusing


def test_all_clear_in_full(serve: Any) -> None:
    report, _ = checked(serve, owned=set())
    assert report.ok
    kms = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys"
    topic = f"projects/{PROD_HC}/topics/dicom-instances"
    assert [(c.area, c.subject, c.status, c.detail, c.fix) for c in report.checks] == [
        (
            "identity",
            f"number of {PROD_HC}",
            "ok",
            "dicom-bq:sourceProjectNumber 987654321098 is the project's number (Resource Manager)",
            "",
        ),
        (
            "identity",
            f"number of {PROD_BQ}",
            "ok",
            "dicom-bq:destinationProjectNumber 555566667777 is the project's number (Resource "
            "Manager)",
            "",
        ),
        (
            "permission",
            "buckets/clinical-imaging-prod-export-filters",
            "ok",
            "you hold storage.buckets.getIamPolicy, storage.buckets.setIamPolicy",
            "",
        ),
        (
            "permission",
            f"projects/{PROD_HC}",
            "ok",
            "you hold healthcare.datasets.create, healthcare.dicomStores.create",
            "",
        ),
        (
            "permission",
            topic,
            "ok",
            "you hold pubsub.topics.getIamPolicy, pubsub.topics.setIamPolicy",
            "",
        ),
        (
            "permission",
            f"{kms}/bigquery",
            "ok",
            "you hold cloudkms.cryptoKeys.getIamPolicy, cloudkms.cryptoKeys.setIamPolicy",
            "",
        ),
        (
            "permission",
            f"{kms}/healthcare",
            "ok",
            "you hold cloudkms.cryptoKeys.getIamPolicy, cloudkms.cryptoKeys.setIamPolicy",
            "",
        ),
        (
            "permission",
            f"projects/{PROD_BQ}",
            "ok",
            "you hold bigquery.datasets.create, bigquery.jobs.create, "
            "resourcemanager.projects.getIamPolicy, resourcemanager.projects.setIamPolicy",
            "",
        ),
        ("api", f"bigquery.googleapis.com in {PROD_BQ}", "ok", "enabled", ""),
        ("api", f"healthcare.googleapis.com in {PROD_HC}", "ok", "enabled", ""),
        ("resource", f"{kms}/bigquery", "ok", "ENCRYPT_DECRYPT, enabled, in europe-west4", ""),
        ("resource", f"{kms}/healthcare", "ok", "ENCRYPT_DECRYPT, enabled, in europe-west4", ""),
        ("resource", topic, "ok", "exists", ""),
        ("resource", "gs://clinical-imaging-prod-export-filters", "ok", "exists in EU", ""),
        ("existing", f"{PROD_BQ}.dicom_metadata", "ok", "free: will be created", ""),
        ("existing", HC_DATASET, "ok", "free: will be created", ""),
        ("existing", STORE_NAME, "ok", "free: will be created", ""),
        (
            "shared",
            f"roles/cloudkms.cryptoKeyEncrypterDecrypter on {kms}/bigquery",
            "ok",
            "will be granted to serviceAccount:bq-555566667777@bigquery-encryption.iam."
            "gserviceaccount.com; nobody else holds it; kept on destroy",
            "",
        ),
        (
            "shared",
            f"roles/cloudkms.cryptoKeyEncrypterDecrypter on {kms}/healthcare",
            "ok",
            f"will be granted to {PROD_AGENT}; nobody else holds it; kept on destroy",
            "",
        ),
        (
            "shared",
            f"roles/bigquery.jobUser on projects/{PROD_BQ}",
            "ok",
            f"will be granted to {PROD_AGENT}; nobody else holds it; kept on destroy",
            "",
        ),
        (
            "shared",
            f"roles/pubsub.publisher on {topic}",
            "ok",
            f"will be granted to {PROD_AGENT}; nobody else holds it; kept on destroy",
            "",
        ),
        (
            "shared",
            "roles/storage.objectViewer on buckets/clinical-imaging-prod-export-filters",
            "ok",
            f"will be granted to {PROD_AGENT}; nobody else holds it; kept on destroy",
            "",
        ),
    ]
    assert report.notes == [
        "grants on scopes stack prod does not create are kept when it is destroyed (another "
        "stack or a person may hold the same binding): `dicom-bq shared-grants --stack prod` "
        "lists them with the commands that remove them"
    ]
    assert report.stack == "prod"


def test_projects_are_also_asked_for_the_right_to_enable_apis(serve: Any) -> None:
    _, fake = checked(serve, owned=set())
    asked = {
        request.path: request.json().get("permissions") or request.query.get("permissions")
        for method, request in fake.requests
        if method.endswith("testIamPermissions")
    }
    projects = {
        path: p for path, p in asked.items() if path.startswith("/v1/projects/") and ":" in path
    }
    assert projects
    for path, permissions in asked.items():
        project_test = "cloudresourcemanager" in path or path.endswith(
            (
                "clinical-imaging-prod:testIamPermissions",
                "imaging-analytics-prod:testIamPermissions",
            )
        )
        if project_test:
            assert "serviceusage.services.enable" in permissions, path
        else:
            assert "serviceusage.services.enable" not in (permissions or []), path
        assert permissions == sorted(set(permissions))


def test_an_unknown_owner_turns_existing_resources_into_warnings(serve: Any) -> None:
    def exists(fake: Any) -> None:
        fake.healthcare_datasets.add(HC_DATASET)
        fake.dicom_stores.add(STORE_NAME)
        fake.bigquery_datasets.add(f"{PROD_BQ}.dicom_metadata")

    report, _ = checked(serve, exists, owned=None, note="no Pulumi CLI")
    assert report.notes[0] == (
        "what stack prod already manages is unknown (no Pulumi CLI): existing resources are "
        "reported as warnings"
    )
    existing = by_subject(report, "existing")
    assert {c.status for c in existing.values()} == {"warn"}
    dataset = existing[HC_DATASET]
    assert dataset.detail == "already exists outside the stack: `pulumi up` would fail creating it"
    assert dataset.fix.startswith(
        f"pulumi import gcp:healthcare/dataset:Dataset dicom-bq-dicom-dataset '{HC_DATASET}'"
    )
    assert existing[STORE_NAME].fix.startswith(
        f"pulumi import gcp:healthcare/dicomStore:DicomStore dicom-bq-dicom-store '{STORE_NAME}'"
    )
    assert existing[f"{PROD_BQ}.dicom_metadata"].fix.startswith(
        "pulumi import gcp:bigquery/dataset:Dataset dicom-bq-bigquery-dataset "
        f"'projects/{PROD_BQ}/datasets/dicom_metadata'"
    )
    assert report.ok


def test_what_exists_outside_a_known_stack_fails_and_its_own_is_fine(serve: Any) -> None:
    def exists(fake: Any) -> None:
        fake.healthcare_datasets.add(HC_DATASET)
        fake.dicom_stores.add(STORE_NAME)
        fake.bigquery_datasets.add(f"{PROD_BQ}.dicom_metadata")

    owned = {HC_DATASET, f"projects/{PROD_BQ}/datasets/dicom_metadata"}
    report, _ = checked(serve, exists, owned=owned)
    existing = by_subject(report, "existing")
    assert existing[HC_DATASET] == PreflightCheck(
        "existing", HC_DATASET, "ok", "exists, managed by stack prod"
    )
    assert existing[f"{PROD_BQ}.dicom_metadata"].detail == "exists, managed by stack prod"
    assert existing[STORE_NAME].status == "fail"
    assert report.ok is False
    assert not any("is unknown" in note for note in report.notes)


def test_an_existence_read_refused_is_a_warning(serve: Any) -> None:
    report, _ = checked(serve, lambda fake: refuse(fake, "/datasets/imaging-prod"), owned=set())
    existing = by_subject(report, "existing")
    for subject in (HC_DATASET, STORE_NAME):
        assert existing[subject] == PreflightCheck(
            "existing",
            subject,
            "warn",
            "could not tell whether it exists (403 forbidden)",
            "check by hand that no resource has this name",
        )


def test_apis_disabled_with_and_without_the_right_to_enable_them(serve: Any) -> None:
    def disabled(fake: Any) -> None:
        fake.services[f"{PROD_HC}/healthcare.googleapis.com"] = "DISABLED"
        fake.services[f"{PROD_BQ}/bigquery.googleapis.com"] = "DISABLED"
        fake.permissions[f"projects/{PROD_BQ}"].add("serviceusage.services.enable")
        fake.permissions[f"projects/{PROD_HC}"].discard("serviceusage.services.enable")

    report, _ = checked(serve, disabled, owned=set())
    apis = by_subject(report, "api")
    assert apis[f"bigquery.googleapis.com in {PROD_BQ}"] == PreflightCheck(
        "api", f"bigquery.googleapis.com in {PROD_BQ}", "ok", "disabled; `pulumi up` will enable it"
    )
    assert apis[f"healthcare.googleapis.com in {PROD_HC}"] == PreflightCheck(
        "api",
        f"healthcare.googleapis.com in {PROD_HC}",
        "fail",
        "disabled, and you lack serviceusage.services.enable to enable it",
        f"gcloud services enable healthcare.googleapis.com --project {PROD_HC} (someone with "
        "roles/serviceusage.serviceUsageAdmin)",
    )


def test_an_api_whose_state_google_does_not_give_is_a_warning(serve: Any) -> None:
    def unsaid(fake: Any) -> None:
        fake.services[f"{PROD_HC}/healthcare.googleapis.com"] = "STATE_UNSPECIFIED"
        fake.services[f"{PROD_BQ}/bigquery.googleapis.com"] = None

    report, _ = checked(serve, unsaid, owned=set())
    apis = by_subject(report, "api")
    fix = "gcloud services list --enabled --project {}"
    assert apis[f"healthcare.googleapis.com in {PROD_HC}"] == PreflightCheck(
        "api",
        f"healthcare.googleapis.com in {PROD_HC}",
        "warn",
        "Google did not say whether it is enabled (its state is STATE_UNSPECIFIED)",
        fix.format(PROD_HC),
    )
    assert apis[f"bigquery.googleapis.com in {PROD_BQ}"] == PreflightCheck(
        "api",
        f"bigquery.googleapis.com in {PROD_BQ}",
        "warn",
        "Google did not say whether it is enabled (no state in its answer)",
        fix.format(PROD_BQ),
    )


def test_an_api_state_that_cannot_be_read_is_a_warning(serve: Any) -> None:
    report, _ = checked(serve, lambda fake: refuse(fake, "/services/"), owned=set())
    apis = by_subject(report, "api")
    assert apis[f"healthcare.googleapis.com in {PROD_HC}"] == PreflightCheck(
        "api",
        f"healthcare.googleapis.com in {PROD_HC}",
        "warn",
        "could not read its state (403 forbidden)",
        f"gcloud services list --enabled --project {PROD_HC}",
    )


def test_missing_permissions_fail_with_the_roles_to_ask_for(serve: Any) -> None:
    def lacking(fake: Any) -> None:
        fake.permissions[f"projects/{PROD_HC}"] -= {
            "healthcare.datasets.create",
            "healthcare.dicomStores.create",
        }

    report, _ = checked(serve, lacking, owned=set())
    permission = by_subject(report, "permission")[f"projects/{PROD_HC}"]
    assert permission == PreflightCheck(
        "permission",
        f"projects/{PROD_HC}",
        "fail",
        "you lack healthcare.datasets.create, healthcare.dicomStores.create: `pulumi up` will "
        "fail creating or granting there",
        _grant_fix(
            f"projects/{PROD_HC}", ["healthcare.datasets.create", "healthcare.dicomStores.create"]
        ),
    )
    assert report.ok is False


def test_a_permission_test_refused_is_a_warning_and_a_missing_scope_is_left_to_its_check(
    serve: Any,
) -> None:
    def broken(fake: Any) -> None:
        refuse(fake, "topics/dicom-instances:testIamPermissions", 403, "x" * 10)
        del fake.buckets["clinical-imaging-prod-export-filters"]

    report, _ = checked(serve, broken, owned=set())
    permissions = by_subject(report, "permission")
    topic = f"projects/{PROD_HC}/topics/dicom-instances"
    assert permissions[topic] == PreflightCheck(
        "permission",
        topic,
        "warn",
        f"could not test your permissions there (403 {'x' * 10}: refused "
        "topics/dicom-instances:testIamPermissions)",
        f"check by hand: gcloud ... get-iam-policy on {topic}",
    )
    assert "buckets/clinical-imaging-prod-export-filters" not in permissions
    bucket = by_subject(report, "resource")["gs://clinical-imaging-prod-export-filters"]
    assert bucket.status == "fail"
    assert bucket.detail == "does not exist: the stack grants a role on it"
    assert bucket.fix.startswith("gcloud storage buckets create gs://clinical-imaging-prod-export")


def test_a_wrong_project_number_fails_with_the_command_that_fixes_it(serve: Any) -> None:
    def renumbered(fake: Any) -> None:
        fake.numbers[PROD_HC] = "111111111111"
        fake.numbers[PROD_BQ] = "222222222222"

    report, _ = checked(serve, renumbered, owned=set())
    identity = by_subject(report, "identity")
    assert identity[f"number of {PROD_HC}"] == PreflightCheck(
        "identity",
        f"number of {PROD_HC}",
        "fail",
        f"dicom-bq:sourceProjectNumber 987654321098 is not the number of project {PROD_HC}: "
        "Resource Manager says 111111111111: the stack would grant "
        "service-987654321098@gcp-sa-healthcare..., another project's Cloud Healthcare service "
        "agent, and `pulumi up` refuses it before any grant",
        "pulumi config set dicom-bq:sourceProjectNumber 111111111111 --stack prod (or remove "
        "the key: the program reads the number)",
    )
    assert identity[f"number of {PROD_BQ}"].detail == (
        f"dicom-bq:destinationProjectNumber 555566667777 is not the number of project {PROD_BQ}: "
        "Resource Manager says 222222222222: the plan's addresses of BigQuery's encryption "
        "account are wrong"
    )
    # The grants are judged for the agent the live number makes.
    shared = by_subject(report, "shared")[f"roles/bigquery.jobUser on projects/{PROD_BQ}"]
    assert shared.detail.startswith(
        "will be granted to serviceAccount:service-111111111111@gcp-sa-healthcare."
    )


def test_a_number_resource_manager_will_not_give_leaves_it_unverified(serve: Any) -> None:
    from dicom_bq.security.stacks import describe_command

    report, _ = checked(serve, lambda fake: fake.hidden.add(PROD_HC), owned=set())
    check = by_subject(report, "identity")[f"number of {PROD_HC}"]
    assert check.status == "warn"
    assert check.detail.startswith("could not read it from Resource Manager (")
    assert check.detail.endswith("): dicom-bq:sourceProjectNumber 987654321098 is unverified")
    assert check.fix == describe_command(PROD_HC)
    # Without the live number, the planned agent is the one judged.
    shared = by_subject(report, "shared")[f"roles/bigquery.jobUser on projects/{PROD_BQ}"]
    assert shared.detail.startswith(f"will be granted to {PROD_AGENT};")


def test_a_binding_held_already_and_its_other_holders_are_named(serve: Any) -> None:
    def held(fake: Any) -> None:
        fake.iam.projects[PROD_BQ] = [
            {"role": "roles/bigquery.jobUser", "members": [PROD_AGENT.upper(), "user:a@x.com"]},
            {"role": "roles/bigquery.admin", "members": ["user:b@x.com"]},
            {
                "role": "roles/bigquery.jobUser",
                "members": ["user:c@x.com"],
                "condition": {"expression": "true", "title": "t"},
            },
        ]

    report, _ = checked(serve, held, owned=set(), stacks=None)
    shared = by_subject(report, "shared")[f"roles/bigquery.jobUser on projects/{PROD_BQ}"]
    assert shared.detail == (
        f"{PROD_AGENT} holds it already (a person or another stack granted it): `pulumi up` "
        "adds this stack's own member resource; also held there by user:a@x.com; kept on destroy"
    )


def test_a_policy_that_cannot_be_read_is_a_warning_with_the_command(serve: Any) -> None:
    from dicom_bq.security.audit import check_command

    report, _ = checked(serve, lambda fake: fake.iam.denied.add(f"projects/{PROD_BQ}"), owned=set())
    shared = by_subject(report, "shared")[f"roles/bigquery.jobUser on projects/{PROD_BQ}"]
    assert shared.status == "warn"
    assert shared.detail.startswith("could not read its IAM policy (")
    assert shared.detail.endswith(
        "): whether the binding exists and who else holds the role there is unknown"
    )
    assert shared.fix == check_command(f"//cloudresourcemanager.googleapis.com/projects/{PROD_BQ}")


def test_preflight_plan_puts_the_plans_notes_first_and_says_the_universe(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.flows.preflight import preflight_plan
    from tests.conftest import cached_plan
    from tests.inventory import ROOT

    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI: what the stack owns is unknown
    fake = ready_for("prod")
    serve(fake)
    made = cached_plan("prod")
    report = preflight_plan(plan=made, project_dir=ROOT, impersonate=None)
    assert made.gcp_provider is not None
    assert report.notes[: len(made.notes)] == made.notes
    assert report.notes[len(made.notes)].startswith("what stack prod already manages is unknown (")
    assert report.universe == made.gcp_provider.as_dict()
    assert report.universe_text == made.gcp_provider.describe()
    assert report_lines(report)[0] == f"universe: {made.gcp_provider.describe()}"
    assert fake.problems == []


def unnumbered(fake: Any) -> Any:
    """The prod plan as if dicom-bq:sourceProjectNumber were not set."""
    import dataclasses

    from tests.conftest import cached_plan

    made = cached_plan("prod")
    assert made.settings is not None
    return dataclasses.replace(
        made, settings=made.settings.model_copy(update={"source_project_number": None})
    )


def test_an_unset_number_is_read_or_said_to_be_known_at_up(serve: Any) -> None:
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.flows.preflight import run_preflight

    for hidden in (False, True):
        fake = ready_for("prod")
        if hidden:
            fake.hidden.add(PROD_HC)
        serve(fake)
        report = run_preflight(
            plan=unnumbered(fake),
            connection=Connection(universe_domain="googleapis.com"),
            owned_ids=set(),
        )
        identity = by_subject(report, "identity")
        check = identity[f"number of {PROD_HC}"]
        if hidden:
            assert check.status == "warn"
            assert check.detail.endswith(
                "): the agent's address is known only once `pulumi up` runs"
            )
        else:
            assert check == PreflightCheck(
                "identity",
                f"number of {PROD_HC}",
                "ok",
                "987654321098 (Resource Manager); the program reads it too",
            )
        # The destination project is checked whatever became of the source's.
        assert identity[f"number of {PROD_BQ}"].status == "ok"


def test_preflight_plan_names_other_stacks_agents_and_why_ownership_is_unknown(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.flows.preflight import preflight_plan
    from tests.conftest import cached_plan
    from tests.inventory import ROOT

    monkeypatch.setenv("PATH", "/nonexistent")
    dev_agent = "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
    fake = ready_for("prod")
    fake.iam.projects[PROD_BQ] = [{"role": "roles/bigquery.jobUser", "members": [dev_agent]}]
    fake.healthcare_datasets.add(HC_DATASET)
    serve(fake)
    made = cached_plan("prod")
    report = preflight_plan(plan=made, project_dir=ROOT, impersonate=None)
    shared = by_subject(report, "shared")[f"roles/bigquery.jobUser on projects/{PROD_BQ}"]
    assert shared.detail.endswith(
        f"; also held there by {dev_agent} (the agent of stack dev); kept on destroy"
    )
    note = report.notes[len(made.notes)]
    assert note.startswith("what stack prod already manages is unknown (")
    assert "None" not in note
    # Ownership unknown: an existing dataset is a warning, not a failure.
    assert by_subject(report, "existing")[HC_DATASET].status == "warn"
