"""The Healthcare dataset and its DICOM stores: where the images (PHI) live."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.protection import phi_options


@dataclass(frozen=True)
class DicomStoreSpec:
    """One store of the dataset, and the resources it must be created after."""

    store_id: pulumi.Input[str]
    labels: pulumi.Input[Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    notification_topic: pulumi.Input[str] | None = None
    send_for_bulk_import: bool | None = None
    stream_table_uris: Sequence[pulumi.Input[str]] = ()
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # None: the single-store form's resource name, `{name}-store`. A store of a dicomStores list
    # is named after its ID, `{name}-store-{id}`, so adding, removing or reordering stores never
    # gives an existing store another logical name.
    listed_id: str | None = None
    # The store takes over the single-store form's resource (an alias of `{name}-store`).
    adopts_single_store: bool = False


@dataclass(frozen=True)
class DicomStorageArgs:
    project: pulumi.Input[str]
    location: pulumi.Input[str]
    dataset_id: pulumi.Input[str]
    stores: Sequence[DicomStoreSpec]
    time_zone: pulumi.Input[str] = "UTC"
    kms_key: pulumi.Input[str] | None = None
    protected: bool = False
    retain_on_delete: bool = False
    dataset_depends_on: list[pulumi.Resource] = field(default_factory=list)


def store_resource_name(name: str, listed_id: str | None) -> str:
    """The logical name (the last part of the URN) of a store of the DicomStorage `name`.

    A store holds PHI, and Pulumi replaces a resource whose logical name changes (delete, then
    create: the images are gone) unless an alias says it is the same one. So the single-store
    form keeps the name its stacks were deployed with, and a listed store's name depends only on
    its own ID, never on its place in the list.
    """
    return f"{name}-store" if listed_id is None else f"{name}-store-{listed_id}"


class DicomStorage(pulumi.ComponentResource):
    dataset: gcp.healthcare.Dataset
    stores: list[gcp.healthcare.DicomStore]
    store_names: list[pulumi.Output[str]]

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
        self.stores = [self._store(name, spec, args) for spec in args.stores]
        # The provider's ID of a DICOM store is its full name, {dataset}/dicomStores/{name}
        # (pulumi-gcp healthcare/dicomStore.py, "Import" section).
        self.store_names = [store.id for store in self.stores]
        self.register_outputs({"store": self.store_names[0], "stores": self.store_names})

    @property
    def store(self) -> gcp.healthcare.DicomStore:
        """The first store (the only one in the single-store form)."""
        return self.stores[0]

    @property
    def store_name(self) -> pulumi.Output[str]:
        return self.store_names[0]

    def _store(
        self, name: str, spec: DicomStoreSpec, args: DicomStorageArgs
    ) -> gcp.healthcare.DicomStore:
        notification = (
            gcp.healthcare.DicomStoreNotificationConfigArgs(
                pubsub_topic=spec.notification_topic,
                send_for_bulk_import=spec.send_for_bulk_import,
            )
            if spec.notification_topic is not None
            else None
        )
        streams = [
            gcp.healthcare.DicomStoreStreamConfigArgs(
                bigquery_destination=gcp.healthcare.DicomStoreStreamConfigBigqueryDestinationArgs(
                    table_uri=uri
                )
            )
            for uri in spec.stream_table_uris
        ]
        opts = phi_options(self, args.protected, args.retain_on_delete, spec.depends_on)
        if spec.adopts_single_store:
            # Converting a stack from dicomStoreId to dicomStores keeps its store: the engine
            # finds the old `{name}-store` through this alias and renames it in its state, an
            # update with no change, instead of deleting a store full of images and creating an
            # empty one. An alias that finds nothing (a new stack, a converted one) does nothing.
            opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(name=f"{name}-store")])
            )
        return gcp.healthcare.DicomStore(
            store_resource_name(name, spec.listed_id),
            name=spec.store_id,
            dataset=self.dataset.id,
            labels=spec.labels,
            notification_config=notification,
            stream_configs=streams or None,
            opts=opts,
        )
