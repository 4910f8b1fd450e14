"""How a command reaches Google, as its options say; the flow picks the default universe (the
stack's or the deployment's) when none is named."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_bq.clients.endpoints import Connection
from dicom_bq.vocabulary import naming


@dataclass(frozen=True)
class GoogleAccess:
    api_endpoint: str | None = None  # --api-endpoint: a private Healthcare endpoint
    impersonate: str | None = None  # --impersonate-service-account
    universe_domain: str | None = None  # --universe-domain; None: the flow's default
    billing_project: str | None = None  # --billing-project, for BigQuery jobs

    def connection(self, *, default_universe: str | None = None) -> Connection:
        """Checked here (Connection's own checks), before any request."""
        return Connection(
            universe_domain=self.universe_domain or default_universe or naming.DEFAULT_UNIVERSE,
            healthcare_endpoint=self.api_endpoint,
            impersonate=self.impersonate,
        )
