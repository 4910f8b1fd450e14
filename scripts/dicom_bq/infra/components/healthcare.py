"""The Healthcare dataset and the DICOM store: where the images (PHI) live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra import naming
from dicom_bq.infra.components.protection import phi_options


@dataclass(frozen=True)
class DicomStorageArgs:
    project: str
    location: str
    dataset_id: str
    store_id: str
    time_zone: str = "UTC"
    labels: Mapping[str, str] = field(default_factory=dict)
    notification_topic: str | None = None
    stream_table_uris: Sequence[str] = ()
    kms_key: str | None = None
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
            if args.kms_key
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
            if args.notification_topic
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
            labels=dict(args.labels),
            notification_config=notification,
            stream_configs=streams or None,
            opts=phi_options(self, args.protected, args.retain_on_delete, args.store_depends_on),
        )
        self.store_name = naming.dicom_store_name(
            args.project, args.location, args.dataset_id, args.store_id
        )
        self.register_outputs({"store": self.store.id})
