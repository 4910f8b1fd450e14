"""The dicom-bq CrossGuard policy pack."""
