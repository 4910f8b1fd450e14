"""The component provider: DicomExportPath as a Pulumi component package.

`pulumi package add <this folder>` (or a git URL ending in it) generates an SDK for
TypeScript, Go, YAML...; Pulumi runs this file to serve the component, and infers its schema
from the type annotations (pulumi.provider.experimental, component_provider_host).
"""

import pulumi
from pulumi.provider.experimental import component_provider_host

from dicom_bq import __version__
from dicom_bq.infra.components.export_path import DicomExportPath

PROVIDER_NAME = "dicom-bq"
COMPONENTS: list[type[pulumi.ComponentResource]] = [DicomExportPath]

if __name__ == "__main__":
    component_provider_host(name=PROVIDER_NAME, components=COMPONENTS, version=__version__)
