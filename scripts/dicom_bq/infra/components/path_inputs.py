"""The first part of DicomExportPath: its arguments read and checked, before any resource exists.

`pulumi up` creates whatever was registered before a program fails, so every refusal (one store
form, names that must be text, a snapshot schedule Google would refuse) happens here, and the
resource parts (components/path_parts.py) take the typed result instead of the raw arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pulumi

from dicom_bq import cron
from dicom_bq.errors import DicomBqError
from dicom_bq.infra.components.snapshot import scheduler_region
from dicom_bq.infra.grants import GrantRequest, TopicGrant
from dicom_bq.vocabulary import naming

if TYPE_CHECKING:
    from dicom_bq.infra.components.export_path import DicomExportPathArgs

Labels = pulumi.Input[Mapping[str, pulumi.Input[str]]]

# The single-store form's key of the publisher grant; a listed store's topic takes it over.
SINGLE_TOPIC_KEY = "notification-topic-publisher"


@dataclass(frozen=True)
class StoreInput:
    """One store of the path, whichever form (dicom_store_id or dicom_stores) declared it."""

    store_id: pulumi.Input[str]
    labels: Labels
    notification_topic: pulumi.Input[str] | None
    send_for_bulk_import: bool | None
    stream_tables: list[pulumi.Input[str]]
    # The store's ID when a dicom_stores list declared it (its resource is named after it).
    listed_id: str | None


class PendingEmail:
    """The snapshot account's email before the account exists, where the universe's address form
    is not known offline: a deferred Output, settled exactly once, with the account's own email
    once nightly_snapshot has made it, or with the program's error when the program fails first.

    It must be settled either way. After a program raises, the SDK still awaits every Output the
    program made before it reports the error (pulumi/runtime/stack.py, run_pulumi_func ->
    wait_for_rpcs, under `pulumi preview`, `pulumi up` and the mocks of `dicom-bq plan` alike):
    a deferred Output left unresolved keeps that wait, and the run, going forever (pulumi/pulumi
    #18559, open). Failing it with the program's error also keeps anything that took the address
    as an input from being registered with a stand-in for it.
    """

    def __init__(self) -> None:
        self.output: pulumi.Output[str]
        self._resolve: Callable[[pulumi.Output[str]], None]
        self.output, self._resolve = pulumi.deferred_output()
        self.settled = False

    def resolve(self, email: pulumi.Output[str]) -> None:
        self.settled = True
        self._resolve(email)

    def fail(self, error: BaseException) -> None:
        """Settle it with `error` (the program's), unless the account's email already has."""
        if self.settled:
            return

        async def failed() -> str:
            raise error

        self.resolve(pulumi.Output.from_input(failed()))


@dataclass(frozen=True)
class SnapshotPlan:
    """The nightly snapshot's names, all known before its resources exist."""

    schedule: str
    time_zone: str
    table: str
    region: str  # Cloud Scheduler's
    account_id: str
    role_id: str
    role_name: str  # projects/P/roles/ID
    # The account's email: text where the universe's address form is known offline, else
    # pending_email's Output, settled with the account's own email once it exists.
    email: pulumi.Input[str]
    pending_email: PendingEmail | None
    # (store ID, full store name) of each store it exports.
    stores: tuple[tuple[str, str], ...]

    @property
    def member(self) -> str | None:
        """The account as an IAM member, where its email is text (so plans, reviews and policy
        checks see it); None: the account's own `member` output."""
        return "serviceAccount:" + self.email if isinstance(self.email, str) else None


@dataclass(frozen=True)
class PathInputs:
    """DicomExportPathArgs with their defaults applied and checked."""

    source_project: pulumi.Input[str]
    bigquery_project: pulumi.Input[str]
    source_project_number: pulumi.Input[str] | None
    location: pulumi.Input[str]
    healthcare_dataset_id: pulumi.Input[str]
    bigquery_dataset_id: pulumi.Input[str]
    bigquery_location: pulumi.Input[str]
    create_bigquery_dataset: bool
    enable_apis: bool
    time_zone: pulumi.Input[str]
    labels: Labels
    notification_topic: pulumi.Input[str] | None
    healthcare_kms_key: pulumi.Input[str] | None
    bigquery_kms_key: pulumi.Input[str] | None
    filter_bucket: pulumi.Input[str] | None
    data_editor_scope: Literal["dataset", "project"]
    propagation_wait_seconds: int
    protected: bool
    retain_on_delete: bool
    universe: str
    stores: list[StoreInput]
    # The stores' IDs, location and dataset ID as text: alerts and snapshots name resources
    # after them (plain str() of the inputs when neither is on).
    store_ids: list[str]
    location_text: str
    dataset_id_text: str
    alert_emails: list[str]
    alert_channels: list[str]
    snapshot: SnapshotPlan | None

    @property
    def alerting(self) -> bool:
        return bool(self.alert_emails or self.alert_channels)


@contextlib.contextmanager
def settled_on_failure(inputs: PathInputs) -> Iterator[None]:
    """Whatever the body raises, the snapshot account's pending email is settled with it first
    (PendingEmail says why: an Output left unresolved turns the program's error into a hang)."""
    try:
        yield
    except BaseException as error:
        if inputs.snapshot is not None and inputs.snapshot.pending_email is not None:
            inputs.snapshot.pending_email.fail(error)
        raise


def read_inputs(args: DicomExportPathArgs) -> PathInputs:
    """The arguments, checked in the order their errors are reported."""
    if args.get("bigquery_kms_key") is not None and not args.get("create_bigquery_dataset", True):
        # The key's grant to BigQuery's encryption account is made with the dataset
        # (components/bigquery.py); on a dataset made elsewhere it would be listed in
        # `grants` but never made.
        raise DicomBqError(
            "bigquery_kms_key sets the default key of the dataset this component creates; "
            "with create_bigquery_dataset=False set the key on your dataset (and grant "
            "BigQuery's encryption account roles/cloudkms.cryptoKeyEncrypterDecrypter on "
            "it), and leave bigquery_kms_key out"
        )
    source_project = args["source_project"]
    labels = args.get("labels", {})
    alert_emails = list(args.get("alert_emails", []))
    alert_channels = list(args.get("alert_channels", []))
    schedule = args.get("snapshot_schedule")
    stores = store_inputs(args, labels)
    # Alerts and snapshots cover every store the path manages, named after its ID.
    named_after_ids = bool(alert_emails or alert_channels) or schedule is not None
    store_ids = [plain_text(store.store_id, "dicom_store_id", named_after_ids) for store in stores]
    # Metric names and filters are made from these too (components/alerts.py).
    location_text = plain_text(args["location"], "location", named_after_ids)
    dataset_id_text = plain_text(
        args["healthcare_dataset_id"], "healthcare_dataset_id", named_after_ids
    )
    return PathInputs(
        source_project=source_project,
        bigquery_project=args.get("bigquery_project", source_project),
        source_project_number=args.get("source_project_number"),
        location=args["location"],
        healthcare_dataset_id=args["healthcare_dataset_id"],
        bigquery_dataset_id=args["bigquery_dataset_id"],
        bigquery_location=args.get("bigquery_location", args["location"]),
        create_bigquery_dataset=args.get("create_bigquery_dataset", True),
        enable_apis=args.get("enable_apis", True),
        time_zone=args.get("time_zone", "UTC"),
        labels=labels,
        notification_topic=args.get("notification_topic"),
        healthcare_kms_key=args.get("healthcare_kms_key"),
        bigquery_kms_key=args.get("bigquery_kms_key"),
        filter_bucket=args.get("filter_bucket"),
        data_editor_scope="project" if args.get("data_editor_scope") == "project" else "dataset",
        propagation_wait_seconds=args.get("iam_propagation_wait_seconds", 120),
        protected=args.get("protected", False),
        retain_on_delete=args.get("retain_on_delete", False),
        universe=args.get("universe_domain", naming.DEFAULT_UNIVERSE),
        stores=stores,
        store_ids=store_ids,
        location_text=location_text,
        dataset_id_text=dataset_id_text,
        alert_emails=alert_emails,
        alert_channels=alert_channels,
        snapshot=(
            None
            if schedule is None
            else snapshot_plan(args, schedule, store_ids, location_text, dataset_id_text)
        ),
    )


def snapshot_plan(
    args: DicomExportPathArgs,
    schedule: str,
    store_ids: list[str],
    location_text: str,
    dataset_id_text: str,
) -> SnapshotPlan:
    """The snapshot's schedule checked and its names made, before any resource is registered."""
    zone = plain_text(
        args.get("snapshot_time_zone") or args.get("time_zone", "UTC"),
        "snapshot_time_zone (or time_zone)",
        True,
    )
    problem = cron.snapshot_schedule_problem(
        cron.parse_schedule(schedule, zone, what="snapshot_schedule"),
        now=datetime.datetime.now(datetime.UTC),
    )
    if problem:
        raise DicomBqError(f"snapshot_schedule {problem}")
    project = plain_text(args["source_project"], "source_project", True)
    hc_dataset = naming.healthcare_dataset_name(project, location_text, dataset_id_text)
    account_id = naming.snapshot_account_id(hc_dataset)
    role_id = naming.snapshot_role_id(hc_dataset)
    table = args.get("snapshot_table", naming.DEFAULT_SNAPSHOT_TABLE)
    _refuse_shared_names(store_ids, table=table, account_id=account_id)
    # Cloud Scheduler's agent is granted on the account: known offline where the universe's
    # address form is, elsewhere the account's own email once it exists. Made after the last
    # refusal here: from now on, DicomExportPath settles it whatever happens (settled_on_failure).
    email: pulumi.Input[str]
    pending_email: PendingEmail | None = None
    if args.get("universe_domain", naming.DEFAULT_UNIVERSE) == naming.DEFAULT_UNIVERSE:
        email = naming.service_account_email(account_id, project)
    else:
        pending_email = PendingEmail()
        email = pending_email.output
    return SnapshotPlan(
        schedule=schedule,
        time_zone=zone,
        table=table,
        region=args.get("snapshot_region") or scheduler_region(location_text),
        account_id=account_id,
        role_id=role_id,
        role_name=naming.custom_role_name(project, role_id),
        email=email,
        pending_email=pending_email,
        stores=tuple((store_id, f"{hc_dataset}/dicomStores/{store_id}") for store_id in store_ids),
    )


def grant_request(inputs: PathInputs) -> GrantRequest:
    """What decides the path's grants (grants.grant_specs)."""
    snapshot = inputs.snapshot
    return GrantRequest(
        source_project=inputs.source_project,
        bigquery_project=inputs.bigquery_project,
        bigquery_dataset_id=inputs.bigquery_dataset_id,
        data_editor_scope=inputs.data_editor_scope,
        filter_bucket=inputs.filter_bucket,
        notification_topic=inputs.notification_topic,
        notification_topics=topic_grants(inputs.stores),
        healthcare_kms_key=inputs.healthcare_kms_key,
        bigquery_kms_key=inputs.bigquery_kms_key,
        snapshot_stores=snapshot.stores if snapshot is not None else (),
        snapshot_account=snapshot.email if snapshot is not None else None,
        snapshot_role=snapshot.role_name if snapshot is not None else None,
        creates_bigquery_dataset=inputs.create_bigquery_dataset,
    )


def plain_text(value: pulumi.Input[str], arg: str, needed: object) -> str:
    """Alerts and snapshots name resources after the store, so its IDs must be plain text
    when the program runs (not another resource's Output)."""
    if needed and not isinstance(value, str):
        raise DicomBqError(
            f"{arg} must be plain text when alerts or a snapshot schedule are on: their "
            "resource names are made from it"
        )
    return str(value)


def store_inputs(args: DicomExportPathArgs, labels: Labels) -> list[StoreInput]:
    """The path's stores, whichever form declared them; exactly one form."""
    single = args.get("dicom_store_id")
    listed = args.get("dicom_stores")
    if (single is None) == (listed is None) or (listed is not None and not listed):
        raise DicomBqError(
            "DicomExportPath needs dicom_store_id (one store) or dicom_stores (a non-empty "
            "list), not both and not neither"
        )
    if single is not None:
        return [
            StoreInput(
                store_id=single,
                labels=labels,
                notification_topic=args.get("notification_topic"),
                send_for_bulk_import=None,
                stream_tables=list(args.get("stream_tables", [])),
                listed_id=None,
            )
        ]
    if args.get("notification_topic") is not None or args.get("stream_tables"):
        raise DicomBqError(
            "with dicom_stores, give each store its notification_topic and stream_tables"
        )
    assert listed is not None
    inputs = []
    for entry in listed:
        if not isinstance(entry["store_id"], str):
            raise DicomBqError(
                "a dicom_stores entry's store_id must be plain text: it names a resource"
            )
        inputs.append(
            StoreInput(
                store_id=entry["store_id"],
                labels=_merged_labels(labels, entry.get("labels", {})),
                notification_topic=entry.get("notification_topic"),
                send_for_bulk_import=entry.get("send_for_bulk_import"),
                stream_tables=list(entry.get("stream_tables", [])),
                listed_id=entry["store_id"],
            )
        )
    return inputs


def _refuse_shared_names(store_ids: list[str], *, table: str, account_id: str) -> None:
    """Each store's snapshot table and job are named after its ID: two IDs that differ only by
    what those names replace would share them (naming.shared_snapshot_names)."""
    shared = naming.shared_snapshot_names(store_ids, table=table, account_id=account_id)
    if shared:
        pair = shared[0]
        raise DicomBqError(
            f"dicom_stores[{pair.second}] store_id '{store_ids[pair.second]}' and "
            f"dicom_stores[{pair.first}] store_id '{store_ids[pair.first]}' would share "
            f"{' and '.join(pair.shared)}: one store's nightly export would replace the other's "
            "snapshot; rename one"
        )


def _merged_labels(base: Labels, own: Mapping[str, pulumi.Input[str]]) -> Labels:
    """The path's labels with the store's own over them."""
    if not own:
        return base
    if isinstance(base, Mapping):
        return {**base, **own}
    return pulumi.Output.all(base).apply(lambda values: {**values[0], **own})


def topic_grants(stores: list[StoreInput]) -> tuple[TopicGrant, ...]:
    """One publisher grant per distinct topic of a dicom_stores list, keyed by the first store
    that names it: a key (the grant's resource name) that does not move when stores are added
    or reordered. The first store's topic keeps the single-store form's grant through an alias.
    Topics that are another resource's Output cannot be compared: each gets its own grant."""
    grants: dict[object, TopicGrant] = {}
    for index, store in enumerate(stores):
        topic = store.notification_topic
        if store.listed_id is None or topic is None:
            continue
        same = topic if isinstance(topic, str) else id(topic)
        found = grants.get(same)
        grants[same] = (
            dataclasses.replace(found, store_ids=(*found.store_ids, store.listed_id))
            if found is not None
            else TopicGrant(
                key=f"{SINGLE_TOPIC_KEY}-{store.listed_id}",
                topic=topic,
                store_ids=(store.listed_id,),
                former_keys=(SINGLE_TOPIC_KEY,) if index == 0 else (),
            )
        )
    return tuple(grants.values())
