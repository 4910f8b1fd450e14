"""The Healthcare dataset and the DICOM store: where the images (PHI) live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.protection import phi_options


@dataclass(frozen=True)
class DicomStorageArgs:
    project: pulumi.Input[str]
    location: pulumi.Input[str]
    dataset_id: pulumi.Input[str]
    store_id: pulumi.Input[str]
    time_zone: pulumi.Input[str] = "UTC"
    labels: pulumi.Input[Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    notification_topic: pulumi.Input[str] | None = None
    stream_table_uris: Sequence[pulumi.Input[str]] = ()
    kms_key: pulumi.Input[str] | None = None
    protected: bool = False
    retain_on_delete: bool = False
    dataset_depends_on: list[pulumi.Resource] = field(default_factory=list)
    store_depends_on: list[pulumi.Resource] = field(default_factory=list)


class DicomStorage(pulumi.ComponentResource):
    dataset: gcp.healthcare.Dataset
    store: gcp.healthcare.DicomStore

    def __init__(
        self, name: str, args: DicomStorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:DicomStorage", name, None, opts)
        encryption = (
            gcp.healthcare.DatasetEncryptionSpecArgs(kms_key_name=args.kms_key)
            if args.kms_key is not None
            else None
        )
        self.dataset = gcp.healthcare.Dataset(
            f"{name}-dataset",
            project=args.project,
            location=args.location,
            name=args.dataset_id,
            time_zone=args.time_zone,
            encryption_spec=encryption,
            opts=phi_options(self, args.protected, args.retain_on_delete, args.dataset_depends_on),
        )
        notification = (
            gcp.healthcare.DicomStoreNotificationConfigArgs(pubsub_topic=args.notification_topic)
            if args.notification_topic is not None
            else None
        )
        streams = [
            gcp.healthcare.DicomStoreStreamConfigArgs(
                bigquery_destination=gcp.healthcare.DicomStoreStreamConfigBigqueryDestinationArgs(
                    table_uri=uri
                )
            )
            for uri in args.stream_table_uris
        ]
        self.store = gcp.healthcare.DicomStore(
            f"{name}-store",
            name=args.store_id,
            dataset=self.dataset.id,
            labels=args.labels,
            notification_config=notification,
            stream_configs=streams or None,
            opts=phi_options(self, args.protected, args.retain_on_delete, args.store_depends_on),
        )
        # The provider's ID of a DICOM store is its full name, {dataset}/dicomStores/{name}
        # (pulumi-gcp healthcare/dicomStore.py, "Import" section).
        self.store_name: pulumi.Output[str] = self.store.id
        self.register_outputs({"store": self.store.id})
