"""The words every room shares: identifiers and how they are checked, resource naming, IAM scope
kinds, the stack's settings, and the outputs contract between the program and the CLI. It
imports no other room of dicom_bq (only errors, texts, files, cron), so the Pulumi program
(infra), the offline stack tools (stack), the clients, the flows and the CLI all import it."""
