"""dicom-bq: the operator CLI for the DICOM-to-BigQuery export path."""

__version__ = "0.1.0"
