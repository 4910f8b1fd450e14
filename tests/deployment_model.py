"""A deployment model that fails like Google: create-time preconditions on simulated time.

The recording mocks accept any order; Google does not. This model takes a recorded plan and
replays it as the engine would: a resource starts once every resource it depends on is done
(and possibly no later: anything not ordered may run in parallel), a `Sleep` takes its
`createDuration`, everything else takes no time. A precondition "X must have happened at least
D seconds before Y" holds only if the dependency graph guarantees it: X is an ancestor of Y and
the Sleeps on the longest path between them add up to D. Resources are told apart by type and
name: a log-based metric and its alert policy share a name, and a dependency on that name is the
one of the two that does not itself depend on the dependent (the graph has no cycles).

Each rule cites the Google page it comes from. Principals the run creates: every service agent
of SERVICE_AGENTS (a ServiceIdentity) and every service account (an Account); knowing only the
Healthcare agent, the model once reported the snapshot + alerts stack's scheduler agent and
snapshot account as created by nothing (three false principal-exists).

Propagation. IAM changes "typically" propagate within 2 minutes and "could potentially take 7
minutes or longer" (https://cloud.google.com/iam/docs/access-change-propagation); a new log-based
metric "could take up to 10 minutes" before an alert policy may use it (Google's own 404,
hashicorp/terraform-provider-google#11102). The program waits `iamPropagationWait` (default 120 s)
after its grants and 120 s after its metrics: Google's typical case, so that a plain `pulumi up`
usually works the first time. The worst case is longer, and the model says how it is covered. A
rule that needs something propagated (PROPAGATION) holds when

1. what it needs is ordered before it, at least the typical delay before (IAM: 120 s; metrics:
   Google gives no typical figure, so ordered is enough). Ordered always: a grant that may not
   exist yet when its user fails is not covered by waiting counted from that failure; and
2. the wait covers Google's worst case (IAM 420 s, metrics 600 s), or the failure Google gives
   while it has not propagated is one `dicom-bq up` recovers from. The model does not take that on
   faith: it hands Google's own text for the failure (PROPAGATION[rule].failure, quoted from the
   report cited beside it, filled with the stack's names) to the recogniser `dicom-bq up` runs,
   dicom_bq.flows.propagation.recognise, with the stack's plan as its evidence. `dicom-bq up` then
   runs `pulumi up` again until the window (420 s, 600 s) has passed since the first failure,
   which comes after what is needed exists (1.): the worst case is covered, with the wait's
   seconds to spare. Only this project's program is deployed by `dicom-bq up` (its evidence is
   the plan's `grants` output): another program using the component (tests/test_component.py's
   consumer) runs plain `pulumi up`, nothing runs it again, and the model says so.

Rule by rule:
- streaming-store: the 403 "failed to verify dataset ..." (tpg#13721): recovered by `dicom-bq up`.
- cmek-bigquery: BigQuery's 403 naming cloudkms.cryptoKeyVersions.useToEncrypt, the key and its
  encryption account (terraform-docs-samples#334): recovered, as a 403 naming a permission of a
  role the stack grants.
- metric-visible: the 404 "Cannot find metric(s) that match type = ..." (tpg#11102): recovered.
- cmek-healthcare: Google documents no error text for a Healthcare dataset created before its
  agent may use the key, and the model does not make one up: only a wait of 420 s covers it. The
  program waits iamPropagationWait before that dataset, so with less than 420 s this is a
  violation that can only happen past Google's typical delay (Violation.worst_case_only):
  reported, for the program to decide (a longer wait before a CMEK dataset, or a recogniser once
  the text is known), not hidden.
- notifying-store: nothing fails at create. "Not having adequate permissions causes the calls that
  send notifications to fail", and the failures are logged to Cloud Logging (Healthcare v1
  NotificationConfig.pubsubTopic). Past the typical delay, what is lost is the notification of an
  instance stored in the new store before the grant arrives; `dicom-bq up` stores nothing there
  (verify seeds a temporary store). The rule asks for the typical wait only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from dicom_bq.flows import propagation
from dicom_bq.stack.plan import Plan, PlannedResource

IAM_TYPICAL_SECONDS = 120
IAM_WORST_SECONDS = 420
METRIC_WORST_SECONDS = 600
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
# Google-managed service agents: service-PROJECT_NUMBER@gcp-sa-SERVICE.iam.gserviceaccount.com,
# made by generateServiceIdentity (https://cloud.google.com/iam/docs/service-agents).
SERVICE_AGENTS = {
    "healthcare.googleapis.com": "gcp-sa-healthcare",
    "cloudscheduler.googleapis.com": "gcp-sa-cloudscheduler",
}
METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"logging\.googleapis\.com/user/([^"]+)"')


@dataclass(frozen=True)
class Propagation:
    """What a rule waits for: Google's typical and worst delays, and the failure Google gives
    when the resource is created too soon (None: nothing fails at create, or no text is
    documented), quoted from `source` with the stack's names as {fields}."""

    typical: int
    worst: int
    failure: str | None
    source: str
    fails_at_create: bool = True


PROPAGATION = {
    "cmek-healthcare": Propagation(
        IAM_TYPICAL_SECONDS,
        IAM_WORST_SECONDS,
        None,
        "no error text documented (https://cloud.google.com/healthcare-api/docs/cmek)",
    ),
    "cmek-bigquery": Propagation(
        IAM_TYPICAL_SECONDS,
        IAM_WORST_SECONDS,
        "Error creating Dataset: googleapi: Error 403: Access Denied: BigQuery BigQuery: Cloud "
        "KMS Error: Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource "
        "'{key}' (or it may not exist). Please grant Cloud KMS CryptoKey Encrypter/Decrypter role "
        "to BigQuery service account: {account}, accessDenied",
        "https://github.com/terraform-google-modules/terraform-docs-samples/pull/334",
    ),
    "streaming-store": Propagation(
        IAM_TYPICAL_SECONDS,
        IAM_WORST_SECONDS,
        "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
        "(projectID:{project}, datasetID:{dataset}), please add the required bigquery.dataEditor "
        "role to your project's service account",
        "https://github.com/hashicorp/terraform-provider-google/issues/13721",
    ),
    "notifying-store": Propagation(
        IAM_TYPICAL_SECONDS,
        IAM_WORST_SECONDS,
        None,
        "notifications fail and are logged, nothing fails at create "
        "(https://cloud.google.com/healthcare-api/docs/reference/rest/v1/NotificationConfig)",
        fails_at_create=False,
    ),
    "metric-visible": Propagation(
        0,
        METRIC_WORST_SECONDS,
        "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match type "
        '= "logging.googleapis.com/user/{metric}". If a metric was created recently, it could '
        "take up to 10 minutes to become available. Please try again soon.",
        "https://github.com/hashicorp/terraform-provider-google/issues/11102",
    ),
}

RULES = {
    "api-enabled": "A Google API must be enabled in a project before its resources are created "
    "there (https://cloud.google.com/service-usage/docs/enable-disable).",
    "principal-exists": "A principal must exist before it is granted a role: Google-managed "
    "accounts are created lazily, service agents (Healthcare's, Cloud Scheduler's) by "
    "generateServiceIdentity (https://cloud.google.com/iam/docs/create-service-agents), BigQuery's "
    "encryption account by projects.getServiceAccount (https://cloud.google.com/bigquery/docs/"
    "customer-managed-encryption: 'Your BigQuery service account is not initially created'); a "
    "service account by its own creation, as ACCOUNT_ID@PROJECT_ID.iam.gserviceaccount.com "
    "(https://cloud.google.com/iam/docs/service-accounts-create).",
    "scope-exists": "A role is granted on a resource that exists: the BigQuery dataset before "
    "its IAM member, the Healthcare dataset before its store.",
    "cmek-healthcare": "A CMEK Healthcare dataset needs the Healthcare agent's "
    "cryptoKeyEncrypterDecrypter on the key, propagated, when it is created "
    "(https://cloud.google.com/healthcare-api/docs/cmek).",
    "cmek-bigquery": "A CMEK BigQuery dataset needs BigQuery's encryption account's "
    "cryptoKeyEncrypterDecrypter on the key, propagated, when it is created "
    "(https://cloud.google.com/bigquery/docs/customer-managed-encryption).",
    "streaming-store": "A store with streamConfigs needs the agent's bigquery.dataEditor on the "
    "destination, propagated, when it is created "
    "(https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-streaming).",
    "notifying-store": "A store with a Pub/Sub notificationConfig needs the agent's "
    "pubsub.publisher on the topic, propagated, before it sends notifications "
    "(https://cloud.google.com/healthcare-api/docs/permissions-healthcare-api-gcp-products).",
    "metric-visible": "An alert policy on a log-based metric needs the metric created, and "
    "known to Cloud Monitoring, when the policy is created "
    "(https://github.com/hashicorp/terraform-provider-google/issues/11102).",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    detail: str
    # Ordered, and with Google's typical delay: fails only when propagation takes longer, and
    # neither the wait nor `dicom-bq up` covers that.
    worst_case_only: bool = False

    def __str__(self) -> str:
        return f"{self.rule}: {self.resource}: {self.detail}"


def _duration(resource: PlannedResource) -> int:
    if resource.type != "time:index/sleep:Sleep":
        return 0
    match = re.fullmatch(r"([0-9]+)s", str(resource.inputs.get("createDuration", "0s")))
    assert match, resource.inputs
    return int(match.group(1))


class Deployment:
    """The plan's custom resources (by URN), their ordering edges, and the principals the run
    creates."""

    def __init__(self, plan: Plan, without: Iterable[tuple[str, str]] = ()) -> None:
        self.plan = plan
        resources = plan.custom_resources()
        self.resources = {r.urn: r for r in resources}
        named: dict[str, list[str]] = {}
        for r in resources:
            named.setdefault(r.name, []).append(r.urn)
        wanted = {r.urn: [named[d] for d in r.depends_on if d in named] for r in resources}
        self.edges: dict[str, set[str]] = {
            urn: {c[0] for c in candidates if len(c) == 1} for urn, candidates in wanted.items()
        }
        for urn, candidates in wanted.items():
            for shared in (c for c in candidates if len(c) > 1):
                meant = [c for c in shared if c != urn and not self._reaches(c, urn)]
                assert len(meant) == 1, f"{urn} depends on one of {shared}: which cannot be told"
                self.edges[urn].add(meant[0])
        # Edges left out by name, once every name is told apart on the whole graph.
        removed = set(without)
        for urn, dependencies in self.edges.items():
            name = self.resources[urn].name
            dependencies -= {d for d in dependencies if (name, self.resources[d].name) in removed}
        # Data sources run while the program runs, before anything that uses their answer.
        self.invoked_members = {
            str(i.result.get("member"))
            for i in plan.invokes
            if i.token.endswith("getDefaultServiceAccount")
        }
        self._evidence: propagation.StackEvidence | None = None

    def _reaches(self, start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            urn = todo.pop()
            if urn == goal:
                return True
            if urn not in seen:
                seen.add(urn)
                todo += self.edges[urn]
        return False

    @cache  # noqa: B019 - one Deployment is short-lived
    def gap(self, later: str, earlier: str) -> int | None:
        """Seconds guaranteed between `earlier` finishing and `later` starting (URNs), or None."""
        best: int | None = None
        for dependency in self.edges[later]:
            if dependency == earlier:
                found: int | None = 0
            else:
                below = self.gap(dependency, earlier)
                found = None if below is None else below + _duration(self.resources[dependency])
            if found is not None and (best is None or found > best):
                best = found
        return best

    def ordered(
        self, later: PlannedResource | str, earlier: PlannedResource | str, seconds: int = 0
    ) -> bool:
        """Whether `earlier` ends at least `seconds` before `later` starts (resources, or names
        that only one resource has)."""
        gap = self.gap(self._urn(later), self._urn(earlier))
        return gap is not None and gap >= seconds

    def _urn(self, resource: PlannedResource | str) -> str:
        if isinstance(resource, PlannedResource):
            return resource.urn
        (urn,) = [u for u, r in self.resources.items() if r.name == resource]
        return urn

    def of_type(self, suffix: str) -> list[PlannedResource]:
        return [r for r in self.resources.values() if r.type.endswith(suffix)]

    def grants(self) -> list[PlannedResource]:
        return [r for r in self.resources.values() if "role" in r.inputs and "member" in r.inputs]

    def agent_prefix(self, project: str, service: str = "healthcare.googleapis.com") -> str:
        number = self.plan.project_numbers[project]
        return f"serviceAccount:service-{number}@{SERVICE_AGENTS[service]}."

    def recovers(self, failure: str) -> bool:
        """Whether `dicom-bq up` takes Google's `failure` (filled with this stack's names) for
        propagation and runs `pulumi up` again: its own recogniser, with this plan as evidence."""
        if self._evidence is None:
            self._evidence = propagation.StackEvidence.from_plan(self.plan)
        return propagation.recognise(failure, self._evidence) is not None


def _healthcare_project(resource: PlannedResource) -> str:
    if "project" in resource.inputs:
        return str(resource.inputs["project"])
    return str(resource.inputs["dataset"]).split("/")[1]


def _need(
    model: Deployment,
    rule: str,
    needer: PlannedResource,
    candidates: list[PlannedResource],
    what: str,
    names: Callable[[PlannedResource], dict[str, str]] = lambda _: {},
) -> list[Violation]:
    """`needer` needs one of `candidates` propagated (PROPAGATION[rule]); `names(candidate)` fill
    Google's failure text for it."""
    spec = PROPAGATION[rule]
    if not candidates:
        return [Violation(rule, needer.name, f"no {what} in the stack")]
    gaps = {c.name: model.gap(needer.urn, c.urn) for c in candidates}
    ordered = [(gap, c) for c in candidates if (gap := gaps[c.name]) is not None]
    best, chosen = max(ordered, key=lambda pair: pair[0], default=(None, None))
    listed = ", ".join(c.name for c in candidates)
    if best is None or chosen is None or best < spec.typical:
        return [
            Violation(
                rule,
                needer.name,
                f"created {'before or beside' if best is None else 'too soon after'} "
                f"{what} ({listed}): it needs {spec.typical}s of propagation between them",
            )
        ]
    if not spec.fails_at_create or best >= spec.worst:
        return []
    if spec.failure is not None and model.recovers(spec.failure.format(**names(chosen))):
        return []
    return [
        Violation(
            rule,
            needer.name,
            f"created {best}s after {what} ({chosen.name}), less than Google's worst case of "
            f"{spec.worst}s, and `dicom-bq up` cannot recover: {spec.source}",
            worst_case_only=True,
        )
    ]


def _member_email(grant: PlannedResource) -> dict[str, str]:
    return {"account": str(grant.inputs["member"]).split(":", 1)[-1]}


def check(plan: Plan, without: Iterable[tuple[str, str]] = ()) -> list[Violation]:
    """Every create-time precondition the deployment would break; [] when it would succeed.
    `without`: (resource, dependency) name pairs of ordering edges to leave out."""
    model = Deployment(plan, without)
    found: list[Violation] = []

    services = {
        (str(s.inputs["project"]), str(s.inputs["service"])): s for s in model.of_type(":Service")
    }

    def needs_api(resource: PlannedResource, project: str, api: str) -> None:
        service = services.get((project, api))
        if service is not None and not model.ordered(resource, service):
            found.append(
                Violation("api-enabled", resource.name, f"{api} in {project} not yet enabled")
            )

    creators: dict[str, PlannedResource] = {}  # member prefix -> what creates it
    for identity in model.of_type(":ServiceIdentity"):
        project, service = str(identity.inputs["project"]), str(identity.inputs["service"])
        needs_api(identity, project, service)
        if service in SERVICE_AGENTS:
            creators[model.agent_prefix(project, service)] = identity
    for account in model.of_type("serviceaccount/account:Account"):
        address = f"{account.inputs['accountId']}@{account.inputs['project']}.iam.gserviceaccount"
        creators[f"serviceAccount:{address}.com"] = account
    for dataset in model.of_type("healthcare/dataset:Dataset"):
        needs_api(dataset, _healthcare_project(dataset), "healthcare.googleapis.com")
    for store in model.of_type(":DicomStore"):
        needs_api(store, _healthcare_project(store), "healthcare.googleapis.com")
    for dataset in model.of_type("bigquery/dataset:Dataset"):
        needs_api(dataset, str(dataset.inputs["project"]), "bigquery.googleapis.com")

    # principal-exists
    for grant in model.grants():
        member = str(grant.inputs["member"])
        if member in model.invoked_members:
            continue
        creator = next((c for p, c in creators.items() if member.startswith(p)), None)
        if creator is None:
            found.append(
                Violation("principal-exists", grant.name, f"nothing in the run creates {member}")
            )
        elif not model.ordered(grant, creator):
            found.append(
                Violation(
                    "principal-exists", grant.name, f"{member} may not exist yet ({creator.name})"
                )
            )

    # scope-exists
    bigquery_datasets = {
        (str(d.inputs["project"]), str(d.inputs["datasetId"])): d
        for d in model.of_type("bigquery/dataset:Dataset")
    }
    for grant in model.of_type(":DatasetIamMember"):
        dataset = bigquery_datasets.get(
            (str(grant.inputs["project"]), str(grant.inputs["datasetId"]))
        )
        if dataset is not None and not model.ordered(grant, dataset):
            found.append(Violation("scope-exists", grant.name, f"{dataset.name} may not exist yet"))
    healthcare_datasets = {
        f"projects/{d.inputs['project']}/locations/{d.inputs['location']}/datasets/{d.inputs['name']}": d
        for d in model.of_type("healthcare/dataset:Dataset")
    }
    for store in model.of_type(":DicomStore"):
        dataset = healthcare_datasets.get(str(store.inputs["dataset"]))
        if dataset is not None and not model.ordered(store, dataset):
            found.append(Violation("scope-exists", store.name, f"{dataset.name} may not exist yet"))
    # A store's and a service account's IAM members, in pulumi-gcp's ID spellings
    # (dicomStoreId: PROJECT/LOCATION/DATASET/STORE or the full name; serviceAccountId:
    # projects/PROJECT/serviceAccounts/EMAIL).
    scopes: dict[str, PlannedResource] = {}
    for store in model.of_type(":DicomStore"):
        full = f"{store.inputs['dataset']}/dicomStores/{store.inputs['name']}"
        scopes[full] = scopes["/".join(full.split("/")[1::2])] = store
    for account in model.of_type("serviceaccount/account:Account"):
        project, account_id = account.inputs["project"], account.inputs["accountId"]
        scopes[
            f"projects/{project}/serviceAccounts/{account_id}@{project}.iam.gserviceaccount.com"
        ] = account
    for grant in model.grants():
        scope = scopes.get(
            str(grant.inputs.get("dicomStoreId") or grant.inputs.get("serviceAccountId"))
        )
        if scope is not None and not model.ordered(grant, scope):
            found.append(Violation("scope-exists", grant.name, f"{scope.name} may not exist yet"))

    # cmek-healthcare
    for dataset in model.of_type("healthcare/dataset:Dataset"):
        key = (dataset.inputs.get("encryptionSpec") or {}).get("kmsKeyName")
        if key:
            agent = model.agent_prefix(_healthcare_project(dataset))
            found += _need(
                model,
                "cmek-healthcare",
                dataset,
                [
                    g
                    for g in model.grants()
                    if g.inputs.get("cryptoKeyId") == key
                    and g.inputs["role"] == ENCRYPTER
                    and str(g.inputs["member"]).startswith(agent)
                ],
                f"the grant of {ENCRYPTER} on {key} to the Healthcare agent",
            )

    # cmek-bigquery
    for dataset in model.of_type("bigquery/dataset:Dataset"):
        key = (dataset.inputs.get("defaultEncryptionConfiguration") or {}).get("kmsKeyName")
        if key:
            project = str(dataset.inputs["project"])
            accounts = {
                str(i.result.get("member"))
                for i in plan.invokes
                if i.token.endswith("getDefaultServiceAccount") and i.args.get("project") == project
            }
            found += _need(
                model,
                "cmek-bigquery",
                dataset,
                [
                    g
                    for g in model.grants()
                    if g.inputs.get("cryptoKeyId") == key
                    and g.inputs["role"] == ENCRYPTER
                    and g.inputs["member"] in accounts
                ],
                f"the grant of {ENCRYPTER} on {key} to BigQuery's encryption account of {project}",
                lambda g, key=key: {"key": str(key), **_member_email(g)},
            )

    # streaming-store, notifying-store
    for store in model.of_type(":DicomStore"):
        agent = model.agent_prefix(_healthcare_project(store))
        for stream in store.inputs.get("streamConfigs") or []:
            uri = str(stream["bigqueryDestination"]["tableUri"])
            project, dataset_id, _ = uri.removeprefix("bq://").split(".", 2)
            found += _need(
                model,
                "streaming-store",
                store,
                [
                    g
                    for g in model.grants()
                    if g.inputs["role"] == "roles/bigquery.dataEditor"
                    and str(g.inputs["member"]).startswith(agent)
                    and g.inputs.get("project") == project
                    and g.inputs.get("datasetId", dataset_id) == dataset_id
                ],
                f"the grant of roles/bigquery.dataEditor on {project}.{dataset_id} to the "
                "Healthcare agent",
                lambda _, p=project, d=dataset_id: {"project": p, "dataset": d},
            )
            destination = bigquery_datasets.get((project, dataset_id))
            if destination is not None and not model.ordered(store, destination):
                found.append(
                    Violation("scope-exists", store.name, f"{destination.name} may not exist yet")
                )
        topic = (store.inputs.get("notificationConfig") or {}).get("pubsubTopic")
        if topic:
            found += _need(
                model,
                "notifying-store",
                store,
                [
                    g
                    for g in model.grants()
                    if g.inputs.get("topic") == topic
                    and g.inputs["role"] == "roles/pubsub.publisher"
                    and str(g.inputs["member"]).startswith(agent)
                ],
                f"the grant of roles/pubsub.publisher on {topic} to the Healthcare agent",
            )

    # metric-visible
    metrics = {str(m.inputs.get("name")): m for m in model.of_type("logging/metric:Metric")}
    for policy in model.of_type(":AlertPolicy"):
        for condition in policy.inputs.get("conditions") or []:
            for body in condition.values():
                filters = str(body.get("filter", "")) if isinstance(body, dict) else ""
                for metric in METRIC_TYPE.findall(filters):
                    found += _need(
                        model,
                        "metric-visible",
                        policy,
                        [metrics[metric]] if metric in metrics else [],
                        f"the log-based metric {metric}",
                        lambda _, m=metric: {"metric": m},
                    )
    return found


def applicable_rules(plan: Plan) -> set[str]:
    """The rules a stack exercises: those with something to check in its plan."""
    model = Deployment(plan)
    rules = {"api-enabled", "principal-exists"}
    if model.of_type(":DatasetIamMember") or model.of_type(":DicomStore"):
        rules.add("scope-exists")
    if any(
        (d.inputs.get("encryptionSpec") or {}).get("kmsKeyName")
        for d in model.of_type("healthcare/dataset:Dataset")
    ):
        rules.add("cmek-healthcare")
    if any(
        (d.inputs.get("defaultEncryptionConfiguration") or {}).get("kmsKeyName")
        for d in model.of_type("bigquery/dataset:Dataset")
    ):
        rules.add("cmek-bigquery")
    for store in model.of_type(":DicomStore"):
        if store.inputs.get("streamConfigs"):
            rules.add("streaming-store")
        if (store.inputs.get("notificationConfig") or {}).get("pubsubTopic"):
            rules.add("notifying-store")
    if model.of_type(":AlertPolicy"):
        rules.add("metric-visible")
    return rules


def edges(plan: Plan) -> list[tuple[str, str]]:
    names = {r.name for r in plan.custom_resources()}
    return sorted((r.name, d) for r in plan.custom_resources() for d in r.depends_on if d in names)
