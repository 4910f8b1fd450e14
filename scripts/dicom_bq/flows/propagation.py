"""What `dicom-bq up` recognises in a failed `pulumi up` as propagation that time alone fixes, and
how long Google says it may take.

Read from the engine's own record of the run (`pulumi up --event-log FILE`, the file the Automation
API reads: one JSON engine event a line, pulumi/pulumi sdk/go/common/apitype/events.go), not from
its display: every error diagnostic names the resource that failed (its URN) and carries the
provider's text. pulumi-gcp passes the terraform provider's error on as it is, "Error creating
<Kind>: googleapi: Error <code>: <Google's message>", wrapped as "1 error occurred:\\n\\t* ..." by
older bridges or prefixed "sdk-v2/provider2.go:NNN: sdk.helper_schema: " (and followed by
": provider=google-beta@X") by newer ones (pulumi/pulumi-gcp#2896), so each is looked for anywhere
in the text. Three failures are propagation, and only while the stack itself grants what they
lack:

- a DICOM store with streamConfigs, refused while its agent's `roles/bigquery.dataEditor` has not
  reached BigQuery: "Error creating DicomStore: googleapi: Error 403: failed to verify dataset
  (projectID:P, datasetID:D), please add the required bigquery.dataEditor role to your project's
  service account" (hashicorp/terraform-provider-google#13721), or "... failed to verify dataset
  projects/P/datasets/D in BigQuery: permission denied" (the stand-in providers' fault mode);
- an alert policy on a log-based metric the stack creates, refused until Cloud Monitoring knows
  the metric: "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match
  type = "logging.googleapis.com/user/NAME". If a metric was created recently, it could take up to
  10 minutes to become available. Please try again soon."
  (hashicorp/terraform-provider-google#11102);
- any other 403 that names a permission of a role the stack grants, and the grantee or the
  resource of that grant: BigQuery's "Error creating Dataset: googleapi: Error 403: Access Denied:
  BigQuery BigQuery: Cloud KMS Error: Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied
  on resource 'KEY' (or it may not exist). Please grant Cloud KMS CryptoKey Encrypter/Decrypter
  role to BigQuery service account: bq-N@bigquery-encryption.iam.gserviceaccount.com, accessDenied"
  (terraform-google-modules/terraform-docs-samples#334). The roles' permissions come from the
  project's role snapshot (dicom_bq/data/role_permissions.json) and, for the stack's own custom
  roles, from the plan. `resourcemanager.projects.*`, which nearly every role holds, is left out:
  denied, it is the deployer's own missing access, not a grant on its way.

The stack's grants are what its plan says it makes: a 403 on one of them is propagation when the
grant is new, which the usual case (the first `up`, or a re-run minutes after one) is. Should the
grant instead have been removed outside the stack, waiting ends with the window and the message
says which grant to check (`dicom-bq audit`).

How long: IAM changes "typically" take 2 minutes and "could potentially take 7 minutes or longer"
(https://cloud.google.com/iam/docs/access-change-propagation): 420 s; a log-based metric "could
take up to 10 minutes to become available" (Google's own 404 above): 600 s. Each window counts from
the first time that resource failed that way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_bq.texts import terminal_safe

if TYPE_CHECKING:
    from dicom_bq.stack.plan import Plan


@dataclass(frozen=True)
class Window:
    """How long Google says one kind of propagation may take, and where it says so."""

    name: str
    seconds: int
    says: str
    source: str


IAM = Window(
    "IAM propagation",
    420,
    "IAM changes typically propagate within 2 minutes and could take 7 or longer",
    "https://cloud.google.com/iam/docs/access-change-propagation",
)
METRIC = Window(
    "metric propagation",
    600,
    "a new log-based metric can take up to 10 minutes before an alert policy may use it",
    "https://github.com/hashicorp/terraform-provider-google/issues/11102",
)

DATA_EDITOR = "roles/bigquery.dataEditor"
MESSAGE_LIMIT = 400


@dataclass(frozen=True)
class Grant:
    role: str
    member: str
    scope: str
    permissions: frozenset[str]

    @property
    def email(self) -> str:
        return self.member.split(":", 1)[-1]

    @property
    def resource(self) -> str:
        """The scope as Google's messages name it: projects/P/..., or a bucket's name."""
        path = re.sub(r"^//[^/]+/", "", self.scope)
        bucket = re.fullmatch(r"projects/_/buckets/([^/]+)", path)
        return bucket.group(1) if bucket else path


@dataclass(frozen=True)
class StackEvidence:
    """What the stack grants and creates, from its plan: the evidence that a failure is one that
    waiting fixes."""

    grants: tuple[Grant, ...]
    metrics: frozenset[str]

    @classmethod
    def from_plan(cls, plan: Plan) -> StackEvidence:
        from dicom_bq.security.roles import custom_role, from_snapshot

        own = {
            role.role: role
            for role in (custom_role(r.type, r.inputs) for r in plan.custom_resources())
            if role is not None
        }
        grants = tuple(
            Grant(
                role=str(g["role"]),
                member=str(g["member"]),
                scope=str(g["scope"]),
                permissions=frozenset(
                    (own.get(str(g["role"])) or from_snapshot(str(g["role"]))).permissions
                ),
            )
            for g in plan.grants
        )
        metrics = frozenset(
            str(r.inputs["name"])
            for r in plan.custom_resources()
            if r.type == "gcp:logging/metric:Metric" and r.inputs.get("name")
        )
        return cls(grants, metrics)


@dataclass(frozen=True)
class Diagnostic:
    """One error `pulumi up` reported: the resource's URN ("" for the update as a whole), and the
    text as the engine recorded it."""

    urn: str
    message: str

    @property
    def resource(self) -> str:
        """The resource's kind and name from the URN ("DicomStore dicom-bq-dicom-store"), or
        "the update" for the update as a whole."""
        if not self.urn:
            return "the update"
        types, _, name = self.urn.rpartition("::")
        kind = types.rsplit("$", 1)[-1].rsplit("::", 1)[-1].rsplit(":", 1)[-1]
        return f"{kind} {name}".strip()


@dataclass(frozen=True)
class Propagation:
    """A failure that waiting fixes: what failed, what it waits for, and for how long at most."""

    window: Window
    resource: str
    waiting_for: str
    google: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.window.name, self.resource)


@dataclass(frozen=True)
class Triage:
    propagating: list[Propagation]
    others: list[Diagnostic]


# Pulumi's own colour markup, which raw-coloured messages carry (<{%fg 1%}>, <{%reset%}>).
_MARKUP = re.compile(r"<\{%[^%]*%\}>")


def _safe(text: str) -> str:
    """Pulumi's markup and every terminal escape sequence stripped, other control characters
    shown escaped; line ends and tabs kept (texts.terminal_safe)."""
    return terminal_safe(_MARKUP.sub("", text))


def clean(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` on one line for a message: terminal escape sequences and Pulumi's colour markup
    stripped, other control characters shown escaped (\\x07), whitespace collapsed, at most
    `limit` characters ('...' when cut)."""
    text = " ".join(_safe(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# What follows a failed step, adding nothing to its error: the engine's message for the update as
# a whole (pulumi/pulumi pkg/resource/deploy/deployment_executor.go, reportExecResult), and the
# Python program's once the engine has stopped taking registrations (pulumi sdk/python
# pulumi/runtime/settings.py, grpc_error_to_exception on UNAVAILABLE).
_CONSEQUENCES = frozenset(
    {"update failed", "preview failed", "resource monitor has terminated, shutting down"}
)


def read_event_log(path: Path) -> list[Diagnostic]:
    """The errors of one `pulumi up --event-log`: error diagnostics, the engine's error events and
    mandatory policy violations, in order. [] when there is no file (pulumi stopped before the
    engine ran: its own message is on stderr)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            event: Any = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        diagnostic = event.get("diagnosticEvent")
        if isinstance(diagnostic, dict) and diagnostic.get("severity") == "error":
            found.append(
                Diagnostic(str(diagnostic.get("urn") or ""), str(diagnostic.get("message") or ""))
            )
        error = event.get("errorEvent")
        if isinstance(error, dict):
            found.append(Diagnostic("", str(error.get("error") or "")))
        policy = event.get("policyEvent")
        if isinstance(policy, dict) and policy.get("enforcementLevel") == "mandatory":
            found.append(
                Diagnostic(
                    str(policy.get("resourceUrn") or ""),
                    f"policy {policy.get('policyName')}: {policy.get('message')}",
                )
            )
    return found


def triage(diagnostics: list[Diagnostic], evidence: StackEvidence) -> Triage:
    """Which errors are propagation (every error item of the diagnostic must be), which are not;
    what only follows a failed step ("update failed") is neither, unless it is all there is."""
    propagating: list[Propagation] = []
    others: list[Diagnostic] = []
    consequences: list[Diagnostic] = []
    for diagnostic in diagnostics:
        if clean(diagnostic.message).rstrip(".").lower() in _CONSEQUENCES:
            consequences.append(diagnostic)
            continue
        found = [recognise(item, evidence, diagnostic.resource) for item in _items(diagnostic)]
        if found and all(found):
            propagating += [p for p in found if p is not None]
        else:
            others.append(diagnostic)
    return Triage(propagating, others or ([] if propagating else consequences))


def _items(diagnostic: Diagnostic) -> list[str]:
    """The errors of a "N errors occurred:" list (hashicorp/go-multierror's format), one each."""
    text = _safe(diagnostic.message)
    if re.search(r"\b\d+ errors? occurred:", text):
        items = [item.strip() for item in re.split(r"(?m)^\s*\*\s+", text)[1:] if item.strip()]
        if items:
            return items
    return [text]


_STORE_DENIED = re.compile(
    r"Error (?:creating|updating) DicomStore: googleapi: Error 403: failed to verify dataset\b"
)
_DATASET_NAMED = (
    re.compile(r"projects/(?P<project>[^/\s]+)/datasets/(?P<dataset>[A-Za-z0-9_]+)"),
    re.compile(r"projectID:\s*(?P<project>[^,\s)]+),\s*datasetID:\s*(?P<dataset>[A-Za-z0-9_]+)"),
)
_METRIC_MISSING = re.compile(
    r"Error (?:creating|updating) AlertPolicy: googleapi: Error 404: Cannot find metric\(s\) "
    r'that match type = "logging\.googleapis\.com/user/(?P<metric>[^"]+)"'
)
_DENIED = re.compile(r"\bError 403\b|\bPERMISSION_DENIED\b")
_PERMISSION = re.compile(r"\b[a-z][a-zA-Z0-9]*(?:\.[a-zA-Z0-9]+){2}\b")
# Held by nearly every role: denied, it is the deployer who lacks it.
_UBIQUITOUS = re.compile(r"^resourcemanager\.projects\.")


def recognise(message: str, evidence: StackEvidence, resource: str = "") -> Propagation | None:
    """The propagation `message` (one error of a `pulumi up`) is, or None."""
    google = clean(message)
    if _STORE_DENIED.search(message):
        return _store_denied(message, evidence, resource, google)
    missing = _METRIC_MISSING.search(message)
    if missing:
        metric = missing.group("metric")
        if metric not in evidence.metrics:
            return None
        return Propagation(
            METRIC,
            resource or "an alert policy",
            f"the log-based metric {metric}, created by this stack, to reach Cloud Monitoring",
            google,
        )
    if _DENIED.search(message):
        return _permission_denied(message, evidence, resource, google)
    return None


def _store_denied(
    message: str, evidence: StackEvidence, resource: str, google: str
) -> Propagation | None:
    editors = [g for g in evidence.grants if g.role == DATA_EDITOR]
    named = next((m for m in (p.search(message) for p in _DATASET_NAMED) if m), None)
    if named:
        project, dataset = named.group("project"), named.group("dataset")
        editors = [
            g
            for g in editors
            if g.resource in (f"projects/{project}/datasets/{dataset}", f"projects/{project}")
        ]
    if not editors:
        return None
    grant = editors[0]
    where = f"{named.group('project')}.{named.group('dataset')}" if named else grant.resource
    return Propagation(
        IAM,
        resource or "a DICOM store",
        f"{DATA_EDITOR} of {grant.member} on {where}, granted by this stack, to reach BigQuery",
        google,
    )


def _permission_denied(
    message: str, evidence: StackEvidence, resource: str, google: str
) -> Propagation | None:
    named = {p for p in _PERMISSION.findall(message) if not _UBIQUITOUS.match(p)}
    for grant in evidence.grants:
        permissions = sorted(named & grant.permissions)
        # The grant itself named: its grantee or its resource (a key, a topic, a bucket...).
        if permissions and (grant.email in message or grant.resource in message):
            return Propagation(
                IAM,
                resource or "a resource",
                f"{grant.role} ({', '.join(permissions)}) of {grant.member} on "
                f"{grant.resource}, granted by this stack, to propagate",
                google,
            )
    return None
