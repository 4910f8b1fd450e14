"""A deployment model that fails like Google: create-time preconditions on simulated time.

The recording mocks accept any order; Google does not. This model takes a recorded plan and
replays it as the engine would: a resource starts once every resource it depends on is done
(and possibly no later: anything not ordered may run in parallel), a `Sleep` takes its
`createDuration`, everything else takes no time. A precondition "X must have happened at least
D seconds before Y" holds only if the dependency graph guarantees it: X is an ancestor of Y and
the Sleeps on the longest path between them add up to D.

Each rule cites the Google page it comes from. IAM propagation is taken as Google's "typically
within 2 minutes" (https://cloud.google.com/iam/docs/access-change-propagation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from dicom_bq.stack.plan import Plan, PlannedResource

PROPAGATION_SECONDS = 120
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"

RULES = {
    "api-enabled": "A Google API must be enabled in a project before its resources are created "
    "there (https://cloud.google.com/service-usage/docs/enable-disable).",
    "principal-exists": "A principal must exist before it is granted a role: Google-managed "
    "accounts are created lazily, the Healthcare agent by generateServiceIdentity "
    "(https://cloud.google.com/iam/docs/create-service-agents), BigQuery's encryption account by "
    "projects.getServiceAccount (https://cloud.google.com/bigquery/docs/customer-managed-"
    "encryption: 'Your BigQuery service account is not initially created').",
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
    "pubsub.publisher on the topic, propagated, when it is created "
    "(https://cloud.google.com/healthcare-api/docs/permissions-healthcare-api-gcp-products).",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.resource}: {self.detail}"


def _duration(resource: PlannedResource) -> int:
    if resource.type != "time:index/sleep:Sleep":
        return 0
    match = re.fullmatch(r"([0-9]+)s", str(resource.inputs.get("createDuration", "0s")))
    assert match, resource.inputs
    return int(match.group(1))


class Deployment:
    """The plan's custom resources, their ordering edges, and the principals the run creates."""

    def __init__(self, plan: Plan, without: Iterable[tuple[str, str]] = ()) -> None:
        self.plan = plan
        self.resources = {r.name: r for r in plan.custom_resources()}
        removed = set(without)
        self.edges = {
            r.name: {d for d in r.depends_on if d in self.resources and (r.name, d) not in removed}
            for r in self.resources.values()
        }
        # Data sources run while the program runs, before anything that uses their answer.
        self.invoked_members = {
            str(i.result.get("member"))
            for i in plan.invokes
            if i.token.endswith("getDefaultServiceAccount")
        }

    @cache  # noqa: B019 - one Deployment is short-lived
    def gap(self, later: str, earlier: str) -> int | None:
        """Seconds guaranteed between `earlier` finishing and `later` starting, or None."""
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

    def ordered(self, later: str, earlier: str, seconds: int = 0) -> bool:
        gap = self.gap(later, earlier)
        return gap is not None and gap >= seconds

    def of_type(self, suffix: str) -> list[PlannedResource]:
        return [r for r in self.resources.values() if r.type.endswith(suffix)]

    def grants(self) -> list[PlannedResource]:
        return [r for r in self.resources.values() if "role" in r.inputs and "member" in r.inputs]

    def agent_prefix(self, project: str) -> str:
        return f"serviceAccount:service-{self.plan.project_numbers[project]}@gcp-sa-healthcare."


def _healthcare_project(resource: PlannedResource) -> str:
    if "project" in resource.inputs:
        return str(resource.inputs["project"])
    return str(resource.inputs["dataset"]).split("/")[1]


def _need_grant(
    model: Deployment,
    rule: str,
    needer: PlannedResource,
    matches: Any,
    what: str,
) -> list[Violation]:
    candidates = [g for g in model.grants() if matches(g)]
    if not candidates:
        return [Violation(rule, needer.name, f"no grant of {what} in the stack")]
    if any(model.ordered(needer.name, g.name, PROPAGATION_SECONDS) for g in candidates):
        return []
    gaps = [model.gap(needer.name, g.name) for g in candidates]
    return [
        Violation(
            rule,
            needer.name,
            f"created {'before or beside' if all(x is None for x in gaps) else 'too soon after'} "
            f"the grant of {what} ({', '.join(g.name for g in candidates)}): it needs "
            f"{PROPAGATION_SECONDS}s of propagation between them",
        )
    ]


def check(plan: Plan, without: Iterable[tuple[str, str]] = ()) -> list[Violation]:
    """Every create-time precondition the deployment would break; [] when it would succeed."""
    model = Deployment(plan, without)
    found: list[Violation] = []

    services = {
        (str(s.inputs["project"]), str(s.inputs["service"])): s.name
        for s in model.of_type(":Service")
    }

    def needs_api(resource: PlannedResource, project: str, api: str) -> None:
        service = services.get((project, api))
        if service is not None and not model.ordered(resource.name, service):
            found.append(
                Violation("api-enabled", resource.name, f"{api} in {project} not yet enabled")
            )

    identities = {}
    for identity in model.of_type(":ServiceIdentity"):
        needs_api(identity, str(identity.inputs["project"]), str(identity.inputs["service"]))
        if identity.inputs["service"] == "healthcare.googleapis.com":
            identities[model.agent_prefix(str(identity.inputs["project"]))] = identity.name
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
        creator = next((n for p, n in identities.items() if member.startswith(p)), None)
        if creator is None:
            found.append(
                Violation("principal-exists", grant.name, f"nothing in the run creates {member}")
            )
        elif not model.ordered(grant.name, creator):
            found.append(
                Violation("principal-exists", grant.name, f"{member} may not exist yet ({creator})")
            )

    # scope-exists
    bigquery_datasets = {
        (str(d.inputs["project"]), str(d.inputs["datasetId"])): d.name
        for d in model.of_type("bigquery/dataset:Dataset")
    }
    for grant in model.of_type(":DatasetIamMember"):
        dataset = bigquery_datasets.get(
            (str(grant.inputs["project"]), str(grant.inputs["datasetId"]))
        )
        if dataset is not None and not model.ordered(grant.name, dataset):
            found.append(Violation("scope-exists", grant.name, f"{dataset} may not exist yet"))
    healthcare_datasets = {
        f"projects/{d.inputs['project']}/locations/{d.inputs['location']}/datasets/{d.inputs['name']}": d.name
        for d in model.of_type("healthcare/dataset:Dataset")
    }
    for store in model.of_type(":DicomStore"):
        dataset = healthcare_datasets.get(str(store.inputs["dataset"]))
        if dataset is not None and not model.ordered(store.name, dataset):
            found.append(Violation("scope-exists", store.name, f"{dataset} may not exist yet"))

    # cmek-healthcare
    for dataset in model.of_type("healthcare/dataset:Dataset"):
        key = (dataset.inputs.get("encryptionSpec") or {}).get("kmsKeyName")
        if key:
            agent = model.agent_prefix(_healthcare_project(dataset))
            found += _need_grant(
                model,
                "cmek-healthcare",
                dataset,
                lambda g, key=key, agent=agent: (
                    g.inputs.get("cryptoKeyId") == key
                    and g.inputs["role"] == ENCRYPTER
                    and str(g.inputs["member"]).startswith(agent)
                ),
                f"{ENCRYPTER} on {key} to the Healthcare agent",
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
            found += _need_grant(
                model,
                "cmek-bigquery",
                dataset,
                lambda g, key=key, accounts=accounts: (
                    g.inputs.get("cryptoKeyId") == key
                    and g.inputs["role"] == ENCRYPTER
                    and g.inputs["member"] in accounts
                ),
                f"{ENCRYPTER} on {key} to BigQuery's encryption account of {project}",
            )

    # streaming-store, notifying-store
    for store in model.of_type(":DicomStore"):
        agent = model.agent_prefix(_healthcare_project(store))
        for stream in store.inputs.get("streamConfigs") or []:
            uri = str(stream["bigqueryDestination"]["tableUri"])
            project, dataset_id, _ = uri.removeprefix("bq://").split(".", 2)
            found += _need_grant(
                model,
                "streaming-store",
                store,
                lambda g, p=project, d=dataset_id, agent=agent: (
                    g.inputs["role"] == "roles/bigquery.dataEditor"
                    and str(g.inputs["member"]).startswith(agent)
                    and g.inputs.get("project") == p
                    and g.inputs.get("datasetId", d) == d
                ),
                f"roles/bigquery.dataEditor on {project}.{dataset_id} to the Healthcare agent",
            )
            destination = bigquery_datasets.get((project, dataset_id))
            if destination is not None and not model.ordered(store.name, destination):
                found.append(
                    Violation("scope-exists", store.name, f"{destination} may not exist yet")
                )
        topic = (store.inputs.get("notificationConfig") or {}).get("pubsubTopic")
        if topic:
            found += _need_grant(
                model,
                "notifying-store",
                store,
                lambda g, topic=topic, agent=agent: (
                    g.inputs.get("topic") == topic
                    and g.inputs["role"] == "roles/pubsub.publisher"
                    and str(g.inputs["member"]).startswith(agent)
                ),
                f"roles/pubsub.publisher on {topic} to the Healthcare agent",
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
    return rules


def edges(plan: Plan) -> list[tuple[str, str]]:
    names = {r.name for r in plan.custom_resources()}
    return sorted((r.name, d) for r in plan.custom_resources() for d in r.depends_on if d in names)
