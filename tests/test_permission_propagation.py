"""PERMISSION_DENIED right after provisioning is retried while IAM propagates, then explained:
by verify's exports, and by `dicom-bq up` when `pulumi up` fails on IAM or metric propagation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.clients.operations import Follower
from dicom_bq.clients.retry import Backoff
from dicom_bq.errors import DicomBqError
from dicom_bq.flows import propagation
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.flows.propagation import Diagnostic, StackEvidence
from dicom_bq.flows.up import PulumiRun, deploy_until_propagated
from dicom_bq.refs import StoreName, TableUri
from tests.conftest import STORE, Cloud, cached_plan
from tests.fakes.clock import VirtualClock
from tests.stacks import operations_stack

PLAN = ExportPlan(StoreName.parse(STORE), TableUri.parse("bq://dicom-src-test.dicom_metadata.t"))


def exporter(cloud: Cloud, clock: VirtualClock, window: float) -> Exporter:
    api = HealthcareApi(Connection(environ=cloud.env))
    return Exporter(
        api,
        clock=clock,
        permission_window=window,
        permission_backoff=Backoff(initial=30, factor=1.0, cap=30, jitter=0),
    )


def test_request_denied_for_the_agent_then_allowed_is_retried(cloud: Cloud) -> None:
    cloud.healthcare.agent_denied_requests = 3
    clock = VirtualClock()
    waits: list[str] = []
    name = exporter(cloud, clock, window=600).start(PLAN, on_wait=lambda why, _: waits.append(why))
    assert name.startswith(
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/"
    )
    assert len(waits) == 3
    assert clock.now == 90
    assert len(cloud.healthcare.operations) == 1


def test_request_denied_for_the_agent_past_the_window_names_the_agent(cloud: Cloud) -> None:
    cloud.healthcare.agent_denied_requests = 1000
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(cloud, clock, window=120).start(PLAN)
    assert caught.value.exit_code == 1
    message = caught.value.message
    assert "PERMISSION_DENIED for 120s" in message
    # The address comes from Google's error, not a placeholder.
    agent = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    assert f"{PLAN.store.project}, {agent}, needs" in message
    assert f'bindings.members:serviceAccount:{agent}"' in message
    assert "AGENT" not in message
    assert "PROJECT_NUMBER" not in message
    assert clock.now == 120


def test_the_callers_own_denial_is_not_retried_and_names_the_permission(cloud: Cloud) -> None:
    cloud.healthcare.caller_denied_exports = 1000
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(cloud, clock, window=600).start(PLAN)
    message = caught.value.message
    assert message.startswith("you (the credentials dicom-bq runs with) lack ")
    assert "healthcare.dicomStores.export on projects/dicom-src-test/" in message
    assert "gcp-sa-healthcare" not in message  # not blamed on the agent
    assert clock.now == 0  # no waiting
    assert cloud.healthcare.caller_denied_exports == 999  # one request


def test_operation_denied_while_propagating_is_exported_again(cloud: Cloud) -> None:
    # The agent's grant reaches BigQuery 100 s after provisioning (virtual time).
    clock = VirtualClock()
    cloud.healthcare.clock = clock
    cloud.healthcare.agent_denied_until = 100
    cloud.healthcare.export_seconds = 5
    api = HealthcareApi(Connection(environ=cloud.env))
    follower = Follower(api, clock=clock)
    state = exporter(cloud, clock, window=600).run(PLAN, follower, timeout=None)
    assert state.done
    assert state.error_code is None
    denied = [op for op in cloud.healthcare.operations.values() if op.error]
    assert len(denied) >= 3
    assert all(op.error and op.error["code"] == 7 for op in denied)


def test_operation_denied_for_good_names_agent_and_roles(cloud: Cloud) -> None:
    clock = VirtualClock()
    cloud.healthcare.clock = clock
    cloud.healthcare.agent_denied_until = 10_000
    api = HealthcareApi(Connection(environ=cloud.env))
    run = exporter(cloud, clock, window=300)
    run.agent_email = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    with pytest.raises(DicomBqError) as caught:
        run.run(PLAN, Follower(api, clock=clock), timeout=None)
    message = caught.value.message
    assert "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com" in message
    assert "does not have bigquery.tables.create" in message
    assert "logs: https://console.cloud.google.com/logs/" in message


# --- What `dicom-bq up` takes for propagation in a failed `pulumi up` (flows/propagation.py) ----
STORE_URN = (
    "urn:pulumi:prod::dicom-bq::dicom-bq:index:DicomStorage$gcp:healthcare/dicomStore:DicomStore"
    "::dicom-bq-dicom-store"
)
BQ_KEY = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/bigquery"
BQ_ACCOUNT = "bq-555566667777@bigquery-encryption.iam.gserviceaccount.com"
# terraform-google-modules/terraform-docs-samples#334: a CMEK dataset before BigQuery's
# encryption account may use the key.
KEY_DENIED = (
    "Error creating Dataset: googleapi: Error 403: Access Denied: BigQuery BigQuery: Cloud KMS "
    "Error: Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource '{key}' (or "
    "it may not exist). Please grant Cloud KMS CryptoKey Encrypter/Decrypter role to BigQuery "
    "service account: {account}, accessDenied"
)


def prod() -> StackEvidence:
    return StackEvidence.from_plan(cached_plan("prod"))


def ops() -> StackEvidence:
    from dicom_bq.stack.plan import plan_settings

    return StackEvidence.from_plan(plan_settings("ops", operations_stack()))


@pytest.mark.parametrize(
    "message",
    [
        # The stand-in providers' fault mode.
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "projects/imaging-analytics-prod/datasets/dicom_metadata in BigQuery: permission denied",
        # hashicorp/terraform-provider-google#13721.
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "(projectID:imaging-analytics-prod, datasetID:dicom_metadata), please add the required "
        "bigquery.dataEditor role to your project's service account",
    ],
)
def test_a_streaming_store_refused_before_the_agents_grant_is_iam_propagation(
    message: str,
) -> None:
    found = propagation.recognise(message, prod(), "DicomStore dicom-bq-dicom-store")
    assert found is not None
    assert found.window is propagation.IAM
    assert found.window.seconds == 420
    assert found.waiting_for.startswith(
        "roles/bigquery.dataEditor of serviceAccount:service-987654321098@gcp-sa-healthcare"
    )
    assert "imaging-analytics-prod.dicom_metadata" in found.waiting_for


def test_a_403_naming_a_permission_the_stack_grants_is_iam_propagation() -> None:
    found = propagation.recognise(KEY_DENIED.format(key=BQ_KEY, account=BQ_ACCOUNT), prod())
    assert found is not None
    assert found.window is propagation.IAM
    assert found.waiting_for == (
        "roles/cloudkms.cryptoKeyEncrypterDecrypter (cloudkms.cryptoKeyVersions.useToEncrypt) of "
        f"serviceAccount:{BQ_ACCOUNT} on {BQ_KEY}, granted by this stack, to propagate"
    )


@pytest.mark.parametrize(
    "metric_type",
    [
        # The stand-in providers' fault mode.
        '"logging.googleapis.com/user/{metric}"',
        # hashicorp/terraform-provider-google#11102, as of provider 7.28.
        '"logging.googleapis.com/user/{metric}". If a metric was created recently, it could '
        "take up to 10 minutes to become available. Please try again soon.",
    ],
)
def test_a_policy_on_a_metric_the_stack_creates_is_metric_propagation(metric_type: str) -> None:
    metric = "dicom_bq/export_errors/us-central1/imaging/archive"
    message = (
        "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match "
        f"type = {metric_type.format(metric=metric)}"
    )
    found = propagation.recognise(message, ops())
    assert found is not None
    assert found.window is propagation.METRIC
    assert found.window.seconds == 600
    assert metric in found.waiting_for
    # Not the stack's metric: waiting would not make it appear.
    assert propagation.recognise(message.replace("archive", "elsewhere"), ops()) is None


@pytest.mark.parametrize(
    "message",
    [
        # A dataset the stack grants nothing on.
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "(projectID:someone-else, datasetID:theirs), please add the required "
        "bigquery.dataEditor role to your project's service account",
        # A key and an account the stack does not grant.
        KEY_DENIED.format(
            key="projects/k/locations/eu/keyRings/r/cryptoKeys/other",
            account="bq-1@bigquery-encryption.iam.gserviceaccount.com",
        ),
        # The permission of a granted role, but neither its grantee nor its resource.
        "Error creating Topic: googleapi: Error 403: Permission 'pubsub.topics.publish' denied",
        # Held by nearly every role: the deployer's own.
        "Error creating Dataset: googleapi: Error 403: Permission 'resourcemanager.projects.get' "
        "denied on resource 'projects/imaging-analytics-prod' for "
        "service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com",
        # The deployer's own missing permission.
        "Error creating Dataset: googleapi: Error 403: Permission 'healthcare.datasets.create' "
        "denied on resource '//healthcare.googleapis.com/projects/clinical-imaging-prod/"
        "locations/europe-west4' (or it may not exist)., forbidden",
        # Another 404 of the Monitoring API (hashicorp/terraform-provider-google#10325).
        "Error creating AlertPolicy: googleapi: Error 404: The metric referenced by the provided "
        "filter is unknown. Check the metric name and labels.",
        # A metric the stack does not create: prod has no alerts.
        "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match type "
        '= "logging.googleapis.com/user/dicom_bq/export_errors/europe-west4/imaging-prod/x"',
        "Error creating DicomStore: googleapi: Error 400: Invalid value at 'dicom_store.labels'",
    ],
)
def test_anything_else_is_not_propagation(message: str) -> None:
    assert propagation.recognise(message, prod()) is None


def test_without_the_grant_in_the_stack_a_key_refusal_is_not_propagation() -> None:
    # dev uses no customer-managed key: its grants hold no encrypter role.
    dev = StackEvidence.from_plan(cached_plan("dev"))
    assert propagation.recognise(KEY_DENIED.format(key=BQ_KEY, account=BQ_ACCOUNT), dev) is None


def test_messages_are_cleaned_and_bounded() -> None:
    raw = "\x1b[31mred\x1b[0m <{%fg 1%}>tagged<{%reset%}> \x1b]8;;http://x\x07link\x1b]8;;\x07"
    assert propagation.clean(raw) == "red tagged link"
    # Other control characters shown, not obeyed (a bidi override would reorder the line).
    assert propagation.clean("a\n\tb\u202ec\x00d") == "a b\\u202ec\\x00d"
    long = propagation.clean("x" * 1000)
    assert len(long) == propagation.MESSAGE_LIMIT
    assert long.endswith("...")


def test_the_event_log_gives_the_errors_in_order(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    events = [
        {"diagnosticEvent": {"urn": STORE_URN, "message": "boom", "severity": "error"}},
        {"diagnosticEvent": {"urn": STORE_URN, "message": "fyi", "severity": "warning"}},
        {"diagnosticEvent": {"message": "program said", "severity": "info#err"}},
        {
            "policyEvent": {
                "resourceUrn": STORE_URN,
                "policyName": "p",
                "message": "m",
                "enforcementLevel": "mandatory",
            }
        },
        {"policyEvent": {"policyName": "q", "message": "n", "enforcementLevel": "advisory"}},
        {"errorEvent": {"error": "snapshot integrity"}},
    ]
    log.write_text("\n".join([*map(json.dumps, events), "not json", "[]"]) + "\n")
    assert propagation.read_event_log(log) == [
        Diagnostic(STORE_URN, "boom"),
        Diagnostic(STORE_URN, "policy p: m"),
        Diagnostic("", "snapshot integrity"),
    ]
    assert propagation.read_event_log(tmp_path / "absent") == []
    assert Diagnostic(STORE_URN, "").resource == "DicomStore dicom-bq-dicom-store"
    assert Diagnostic("", "").resource == "the update"


def test_every_error_of_a_run_must_be_propagation() -> None:
    store_denied = (
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "projects/imaging-analytics-prod/datasets/dicom_metadata in BigQuery: permission denied"
    )
    both = f"2 errors occurred:\n\t* {store_denied}\n\t* Error 400: bad label\n\n"
    found = propagation.triage(
        [Diagnostic(STORE_URN, both), Diagnostic("", "update failed")], prod()
    )
    assert found.propagating == []
    assert found.others == [Diagnostic(STORE_URN, both)]
    # What only follows a failed step: the engine's "update failed", and the Python program's
    # once the engine stopped (seen from pulumi v3.274 with the stand-in's fault mode).
    monitor = Diagnostic("", "Resource monitor has terminated, shutting down")
    found = propagation.triage(
        [
            Diagnostic(STORE_URN, f"1 error occurred:\n\t* {store_denied}\n\n"),
            Diagnostic("", "update failed"),
            monitor,
        ],
        prod(),
    )
    assert [p.resource for p in found.propagating] == ["DicomStore dicom-bq-dicom-store"]
    assert found.others == []
    # Alone, they are what there is to say.
    assert propagation.triage([monitor], prod()).others == [monitor]


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def notice(self, message: str) -> None:
        self.lines.append(message)

    def waiting(self, why: str, delay: float) -> None:
        self.lines.append(f"{why}; retrying in {delay:.0f}s")

    def started(self, operation: str) -> None:
        raise AssertionError("no operation while deploying")

    def progress(self, state: object, elapsed: float) -> None:
        raise AssertionError("no operation while deploying")

    def step(self, result: object) -> None:
        raise AssertionError("no verify step while deploying")


def test_each_resource_has_its_own_window_from_its_own_first_failure() -> None:
    """The store fails runs 1-3, then the CMEK dataset from run 4 on (its grant came later): the
    dataset gets 420 s from run 4, not what was left of the store's."""
    store = Diagnostic(
        STORE_URN,
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "projects/imaging-analytics-prod/datasets/dicom_metadata in BigQuery: permission denied",
    )
    dataset = Diagnostic(
        "urn:pulumi:prod::dicom-bq::gcp:bigquery/dataset:Dataset::dicom-bq-bigquery-dataset",
        KEY_DENIED.format(key=BQ_KEY, account=BQ_ACCOUNT),
    )
    runs: list[int] = []

    def run(attempt: int) -> PulumiRun:
        runs.append(attempt)
        return PulumiRun(255, [store if attempt <= 3 else dataset], "")

    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        deploy_until_propagated(run=run, evidence=prod(), observer=Notes(), clock=clock)
    assert clock.sleeps == [30, 60, 120, 120, 120, 120, 60]
    assert clock.now == 210 + 420
    assert runs == [1, 2, 3, 4, 5, 6, 7, 8]
    assert caught.value.exit_code == 1
    assert caught.value.message.startswith(
        "`pulumi up` still fails on Dataset dicom-bq-bigquery-dataset 420s after it first did "
        "(8 runs), past the 420s Google gives IAM propagation"
    )


def test_a_run_that_succeeds_ends_the_waiting() -> None:
    failures = [
        [
            Diagnostic(
                STORE_URN,
                "Error creating DicomStore: googleapi: Error 403: failed to "
                "verify dataset projects/imaging-analytics-prod/datasets/dicom_metadata "
                "in BigQuery: permission denied",
            )
        ],
    ] * 4
    clock = VirtualClock()
    notes = Notes()
    deployment = deploy_until_propagated(
        run=lambda n: PulumiRun(255, failures[n - 1], "") if n <= 4 else PulumiRun(0, [], ""),
        evidence=prod(),
        observer=notes,
        clock=clock,
    )
    assert deployment.attempts == 5
    assert clock.sleeps == [30, 60, 120, 120]
    assert deployment.as_dict()["waited_seconds"] == 330
    assert notes.lines[-1] == "waiting for IAM to propagate; retrying in 120s"
