"""The `dicom-bq` command line, a module per area; each command parses, calls a domain module
(no typer there), and prints. Heavy modules (Pulumi, Google clients) are imported inside the
commands that need them, so `dicom-bq --help` starts quickly.

- common: the app, the one error boundary (`guarded`), shared options and output helpers
- review: plan, review, audit, preflight
- filters: filter validate/build/upload, query ...
- export: export, operations describe/wait
- verify: verify, up
- status: status
"""

from dicom_bq.cli import export, filters, review, status, verify
from dicom_bq.cli.common import app

__all__ = ["app", "export", "filters", "main", "review", "status", "verify"]


def main() -> None:
    app()
