"""The BigQuery dataset that receives exported DICOM metadata, in its own project."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.iam import grants_then_wait
from dicom_bq.infra.components.protection import phi_options
from dicom_bq.infra.grants import GrantSpec


@dataclass(frozen=True)
class BigQueryDestinationArgs:
    project: pulumi.Input[str]
    dataset_id: pulumi.Input[str]
    location: pulumi.Input[str]
    labels: pulumi.Input[Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    kms_key: pulumi.Input[str] | None = None
    # BigQuery's encryption account's grant on kms_key, made before the dataset that uses the key.
    encryption_grant: GrantSpec | None = None
    encryption_member: pulumi.Input[str] | None = None
    propagation_wait_seconds: int = 120
    protected: bool = False
    retain_on_delete: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class BigQueryDestination(pulumi.ComponentResource):
    dataset: gcp.bigquery.Dataset

    def __init__(
        self, name: str, args: BigQueryDestinationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:BigQueryDestination", name, None, opts)
        encryption = (
            gcp.bigquery.DatasetDefaultEncryptionConfigurationArgs(kms_key_name=args.kms_key)
            if args.kms_key is not None
            else None
        )
        depends_on = list(args.depends_on)
        if args.encryption_grant is not None and args.encryption_member is not None:
            # BigQuery checks that its encryption account can use the key when it creates a
            # CMEK dataset ("cloudkms.cryptoKeyVersions.useToEncrypt denied" otherwise:
            # https://cloud.google.com/bigquery/docs/customer-managed-encryption), so the
            # dataset waits for the grant to propagate.
            _, propagated = grants_then_wait(
                name,
                [args.encryption_grant],
                args.encryption_member,
                args.propagation_wait_seconds,
                parent=self,
                depends_on=args.depends_on,
            )
            depends_on.append(propagated)
        self.dataset = gcp.bigquery.Dataset(
            f"{name}-dataset",
            project=args.project,
            dataset_id=args.dataset_id,
            location=args.location,
            labels=args.labels,
            description="DICOM metadata exported from the Cloud Healthcare API (PHI).",
            default_encryption_configuration=encryption,
            # Exported tables hold PHI: destroying the stack never drops them with the dataset.
            delete_contents_on_destroy=False,
            opts=phi_options(self, args.protected, args.retain_on_delete, depends_on),
        )
        self.register_outputs({"dataset_id": self.dataset.dataset_id})
