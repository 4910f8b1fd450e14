"""The dicom-bq Pulumi program and its parts."""
