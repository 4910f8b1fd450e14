"""A team's own Pulumi program adding the DICOM export path to a project it creates.

Outputs flow in as inputs (the new project's ID and number, the team's existing BigQuery
dataset), so Pulumi orders everything from them, as pulumi/examples aws-py-hub-and-spoke-network
passes its outputs along.
"""

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

config = pulumi.Config()
project = gcp.organizations.Project(
    "imaging",
    project_id=config.get("projectId") or "imaging-team-demo",
    name="Imaging team",
    org_id=config.get("orgId") or "123456789",
    billing_account=config.get("billingAccount") or "000000-000000-000000",
    deletion_policy="PREVENT",
)
# The team enables the APIs its own resources need; the component then leaves them alone.
apis = [
    gcp.projects.Service(
        f"api-{service.split('.')[0]}",
        project=project.project_id,
        service=service,
        disable_on_destroy=False,
    )
    for service in ("bigquery.googleapis.com", "healthcare.googleapis.com")
]
# The project's ID, known once its APIs are on: whatever is created with it waits for them.
project_ready = pulumi.Output.all(project.project_id, *[api.id for api in apis]).apply(
    lambda values: str(values[0])
)
analytics = gcp.bigquery.Dataset(
    "analytics",
    project=project_ready,
    dataset_id="dicom_analytics",
    location="EU",
)
path = DicomExportPath(
    "dicom",
    DicomExportPathArgs(
        source_project=project_ready,
        source_project_number=project.number,
        location="eu",
        healthcare_dataset_id="imaging",
        dicom_store_id="studies",
        bigquery_dataset_id=analytics.dataset_id,
        create_bigquery_dataset=False,
        stream_tables=["instances"],
        enable_apis=False,
        protected=True,
    ),
)
pulumi.export("dicomStore", path.store_name)
pulumi.export("grants", path.grants)
