"""The Healthcare agent's identity comes from Google, and a configured project number is checked.

The program takes the agent's address from the ServiceIdentity's answer, and where
`sourceProjectNumber` is set it asks Resource Manager (gcp.organizations.get_project) for the
project's real number and refuses a mismatch, both numbers named, before registering any grant.
The offline plan says the configured number is unverified. (Preflight's and the audit's checks
are in tests/test_preflight.py and tests/test_audit_review.py.)
"""

from __future__ import annotations

import logging
from typing import Any

import pulumi
import pytest
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

from dicom_bq.infra.components.agent import ProjectNumberMismatchError
from dicom_bq.infra.program import define_stack, load_settings
from dicom_bq.stack.config import PROJECT_NAME
from dicom_bq.stack.plan import GET_PROJECT, _RecordingMocks, _RecordingMonitor, plan_settings
from dicom_bq.stack.plan import _config_text as config_text
from dicom_bq.vocabulary import naming
from tests.conftest import base_settings

CONFIGURED = "111122223333"  # base_settings' sourceProjectNumber
REAL = "444455556666"
PROJECT = "dicom-src-test"
IAM_MEMBER_SUFFIXES = ("IAMMember", "IamMember")


class _Google(_RecordingMocks):
    """The recording mock, answering as Google would for a project whose number is `real`, and
    a ServiceIdentity whose address is `agent_email` when given."""

    def __init__(self, real: str, agent_email: str | None = None) -> None:
        super().__init__({PROJECT: real})
        self.agent_email = agent_email

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[Any, Any]]:
        resource_id, outputs = super().new_resource(args)
        if args.typ.endswith("ServiceIdentity") and self.agent_email is not None:
            outputs["email"] = self.agent_email
            outputs["member"] = f"serviceAccount:{self.agent_email}"
        return resource_id, outputs


def _not_the_refusal(record: logging.LogRecord) -> bool:
    """The Outputs that carry the refusal are never all awaited once the program has failed, and
    asyncio logs each as "Future exception was never retrieved" when it is collected; the
    language host silences asyncio's log for the same reason (pulumi-language-python-exec)."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, ProjectNumberMismatchError)


logging.getLogger("asyncio").addFilter(_not_the_refusal)


def run_program(
    raw: dict[str, Any], google: _Google
) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, Any], BaseException | None]:
    """The real program under `google`: what it registered (type, name, inputs), its outputs,
    and the error it failed with."""
    monitor = _RecordingMonitor(google)
    set_all_config({f"{PROJECT_NAME}:{k}": config_text(v) for k, v in raw.items()}, [])
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        google, project=PROJECT_NAME, stack="t", preview=False, monitor=monitor
    )
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def run() -> pulumi.Output[Any]:
        return pulumi.Output.all(**define_stack(load_settings())).apply(outputs.update)

    error: BaseException | None = None
    try:
        run()
    except Exception as raised:  # the program's failure, as the engine would get it
        error = raised
    registered = [(str(r.type), str(r.name), inputs) for _, r, inputs in monitor.registrations]
    return registered, outputs, error


def grants_registered(registered: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    return [name for kind, name, _ in registered if kind.endswith(IAM_MEMBER_SUFFIXES)]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        # Every kind of grant the stack makes: bucket, topic, keys, the snapshot's store and
        # service-account grants, BigQuery's encryption account's key grant.
        {
            "filterBucket": "dicom-src-test-filters",
            "notificationTopic": f"projects/{PROJECT}/topics/instances",
            "healthcareKmsKey": f"projects/{PROJECT}/locations/us-central1/keyRings/r/cryptoKeys/h",
            "bigqueryKmsKey": f"projects/{PROJECT}/locations/us-central1/keyRings/r/cryptoKeys/b",
            "snapshotSchedule": "0 2 * * *",
        },
    ],
    ids=["minimal", "every-grant-kind"],
)
def test_a_wrong_source_project_number_is_refused_before_any_grant(extra: dict[str, Any]) -> None:
    google = _Google(real=REAL)
    registered, _, error = run_program(base_settings(**extra), google)
    assert isinstance(error, ProjectNumberMismatchError), error
    assert isinstance(error, pulumi.RunError)  # the engine prints it without a traceback
    assert CONFIGURED in str(error)
    assert REAL in str(error)
    assert f"project {PROJECT}" in str(error)
    assert grants_registered(registered) == []
    # The check was asked of Google, for the source project.
    assert {"projectId": PROJECT} in [i.args for i in google.invokes if i.token == GET_PROJECT]


def test_the_right_number_lets_every_grant_through() -> None:
    registered, outputs, error = run_program(base_settings(), _Google(real=CONFIGURED))
    assert error is None
    assert grants_registered(registered)
    assert outputs["agentEmail"] == naming.agent_email(CONFIGURED)


def test_the_agents_address_is_googles_answer_not_one_built_from_the_number() -> None:
    """The ServiceIdentity's `member` is what Google answers when it makes the agent exist;
    every grant goes to that address."""
    answered = f"service-{REAL}@gcp-sa-healthcare.iam.gserviceaccount.com"
    raw = base_settings(sourceProjectNumber=None)
    registered, outputs, error = run_program(raw, _Google(real=CONFIGURED, agent_email=answered))
    assert error is None
    members = {inputs["member"] for kind, _, inputs in registered if kind.endswith("IAMMember")}
    assert members == {f"serviceAccount:{answered}"}
    assert outputs["agentEmail"] == answered


def test_the_check_is_a_resource_manager_lookup_of_the_source_project() -> None:
    google = _Google(real=CONFIGURED)
    _, _, error = run_program(base_settings(destinationProject="analytics-prj"), google)
    assert error is None
    assert [i.args for i in google.invokes if i.token == GET_PROJECT] == [{"projectId": PROJECT}]


def test_the_offline_plan_marks_a_configured_number_unverified() -> None:
    plan = plan_settings("unverified", base_settings())
    (note,) = [n for n in plan.notes if "sourceProjectNumber" in n]
    assert note.startswith(f"dicom-bq:sourceProjectNumber {CONFIGURED} is unverified here")
    assert "preflight" in note
    plain = plan_settings("looked-up", base_settings(sourceProjectNumber=None))
    assert not [n for n in plain.notes if "unverified" in n]
