"""BigQuery reads the CLI needs: does a table exist, how many rows, is this instance's row there;
and verify's scratch tables, made with an expiration and deleted.

Everything here reads (tables.get, datasets.get, and SELECT queries), but for the scratch tables
of `verify --no-seed`: tables.insert of an empty table with expirationTime, and tables.delete.
google-cloud-bigquery retries jobs.query (query_and_wait, DEFAULT_RETRY) with one requestId for
all its tries (google/cloud/bigquery/_job_helpers.py, do_query), which BigQuery uses "to ensure
idempotent behavior for queries", read-only ones being "nullipotent by definition" (bigquery v2
discovery document, QueryRequest.requestId): a resent query changes nothing
(tests/test_transport_faults.py).

Every call has a deadline: google-cloud-bigquery waits for an answer without one
(retry.DEFAULT_TIMEOUT is None) and retries a refused or lost connection for 10 minutes
(retry._DEFAULT_RETRY_DEADLINE), so a closed BIGQUERY_EMULATOR_HOST port would hang the command.
Each request here waits at most REQUEST_TIMEOUT seconds, and its retries stop RETRY_DEADLINE
seconds after the first try (google.api_core Retry.with_timeout); then the message names the
endpoint that did not answer."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import connection_failure
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.filters.queries import Query, instance_row
from dicom_bq.refs import TableUri

# Seconds one request may take (requests' connect and read timeouts), and seconds after which
# retries stop (a refused connection is retried until then).
REQUEST_TIMEOUT = 60.0
RETRY_DEADLINE = 30.0


@dataclass(frozen=True)
class TableInfo:
    """tables.get's counts (bigquery v2 Table): numRows leaves out the streaming buffer, whose
    streamingBuffer.estimatedRows is a lower-bound estimate; lastModifiedTime (ms since the
    epoch) arrives as an aware datetime."""

    committed_rows: int
    buffered_rows: int
    last_modified: datetime.datetime | None


class BigQueryTables:
    """Reads of fully qualified tables; every query job runs in, and is billed to,
    `billing_project`, whichever project holds the tables."""

    def __init__(self, connection: Connection, billing_project: str) -> None:
        from google.cloud import bigquery

        self._bigquery = bigquery
        self.billing_project = billing_project
        self._client = connection.bigquery_client(billing_project)
        self._endpoint = connection.bigquery()

    def _retry(self, retry: Any = None) -> Any:
        """google-cloud-bigquery's retry (DEFAULT_RETRY, or `retry`) stopping at RETRY_DEADLINE."""
        return (retry or self._bigquery.DEFAULT_RETRY).with_timeout(RETRY_DEADLINE)

    def _job_retry(self) -> Any:
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

        return self._retry(DEFAULT_JOB_RETRY)

    def _fail(self, what: str, error: Exception) -> DicomBqError:
        import requests
        from google.api_core import exceptions

        cause = error.cause if isinstance(error, exceptions.RetryError) else error
        if isinstance(error, exceptions.RetryError) or isinstance(
            cause, (requests.RequestException, ConnectionError, TimeoutError)
        ):
            variable = " (BIGQUERY_EMULATOR_HOST)" if self._endpoint.emulated else ""
            return DicomBqError(
                f"BigQuery at {self._endpoint.url}{variable} did not answer, to {what}: "
                f"{connection_failure(cause)} (tried for up to "
                f"{RETRY_DEADLINE:g}s, {REQUEST_TIMEOUT:g}s a request). Check that the endpoint "
                "is right and reachable, then try again",
                exit_code=EXIT_FAILED,
            )
        return DicomBqError(f"BigQuery refused to {what}: {error}", exit_code=EXIT_FAILED)

    def _described(self, table: TableUri) -> Any | None:
        """tables.get, or None when the table does not exist."""
        import requests
        from google.api_core import exceptions

        try:
            return self._client.get_table(
                table.table_id, retry=self._retry(), timeout=REQUEST_TIMEOUT
            )
        except exceptions.NotFound:
            return None
        except (exceptions.GoogleAPIError, requests.RequestException, OSError) as error:
            raise self._fail(f"describe {table.uri}", error) from None

    def row_count(self, table: TableUri) -> int | None:
        """Rows in the table, those still in its streaming buffer included, or None when it
        does not exist. numRows leaves out rows streamed in the last minutes
        (bigquery v2 Table.streamingBuffer.estimatedRows): a stream table can look empty."""
        info = self.table_info(table)
        return None if info is None else info.committed_rows + info.buffered_rows

    def table_fields(self, table: TableUri) -> list[dict[str, Any]]:
        """The table's columns as tables.get gives them (bigquery v2 TableFieldSchema: name,
        type, mode, fields): what tells a nested, flattened or JSON export apart."""
        found = self._described(table)
        if found is None:
            raise DicomBqError(
                f"{table.uri} does not exist: export to it first (`dicom-bq export`), or check "
                "the project, dataset and table names"
            )
        return [dict(field.to_api_repr()) for field in found.schema]

    def table_info(self, table: TableUri) -> TableInfo | None:
        """Rows (committed, and estimated in the streaming buffer) and last modification of a
        table, or None when it does not exist."""
        found = self._described(table)
        if found is None:
            return None
        buffer = found.streaming_buffer
        return TableInfo(
            committed_rows=int(found.num_rows or 0),
            buffered_rows=int(buffer.estimated_rows or 0) if buffer is not None else 0,
            last_modified=found.modified,
        )

    def dataset_access(self, project: str, dataset: str) -> list[dict[str, Any]] | None:
        """The dataset's access entries (role, member kinds), or None when it does not exist."""
        import requests
        from google.api_core import exceptions

        try:
            found = self._client.get_dataset(
                f"{project}.{dataset}", retry=self._retry(), timeout=REQUEST_TIMEOUT
            )
        except exceptions.NotFound:
            return None
        except (exceptions.GoogleAPIError, requests.RequestException, OSError) as error:
            raise self._fail(f"describe dataset {project}:{dataset}", error) from None
        return [entry.to_api_repr() for entry in found.access_entries]

    def create_table(self, table: TableUri, expires: datetime.datetime) -> None:
        """tables.insert of an empty table that BigQuery deletes at `expires` (bigquery v2
        discovery document, Table.expirationTime: "Expired tables will be deleted and their
        storage reclaimed"); needs bigquery.tables.create on the dataset. The table's name is
        new: a 409 is this create's own earlier try, whose answer was lost."""
        import requests
        from google.api_core import exceptions

        made = self._bigquery.Table(table.table_id)
        made.expires = expires
        try:
            self._client.create_table(made, retry=self._retry(), timeout=REQUEST_TIMEOUT)
        except exceptions.Conflict:
            return
        except (exceptions.GoogleAPIError, requests.RequestException, OSError) as error:
            raise self._fail(f"create {table.uri}", error) from None

    def delete_table(self, table: TableUri) -> bool:
        """tables.delete ("If the table contains data, all the data will be deleted": bigquery
        v2 discovery document; needs bigquery.tables.delete): True when this call deleted it,
        False when BigQuery answers 404 (it is already gone)."""
        import requests
        from google.api_core import exceptions

        try:
            self._client.delete_table(table.table_id, retry=self._retry(), timeout=REQUEST_TIMEOUT)
        except exceptions.NotFound:
            return False
        except (exceptions.GoogleAPIError, requests.RequestException, OSError) as error:
            raise self._fail(f"delete {table.uri}", error) from None
        return True

    def instance_rows(self, table: TableUri, sop_instance_uid: str) -> list[dict[str, Any]]:
        """The exported rows of one instance; the UID travels as a query parameter."""
        return list(self.run(instance_row(table, sop_instance_uid), what=f"query {table.uri}"))

    def run(
        self, query: Query, page_size: int = 10_000, what: str = "run the query"
    ) -> Iterator[dict[str, Any]]:
        """Rows of `query`, fetched a page at a time so a large result is never held whole."""
        import requests
        from google.api_core import exceptions

        config = self._bigquery.QueryJobConfig(
            query_parameters=[
                self._bigquery.ScalarQueryParameter(name, kind, value)
                for name, kind, value in query.parameters
            ]
        )
        try:
            for row in self._client.query_and_wait(
                query.sql,
                job_config=config,
                page_size=page_size,
                api_timeout=REQUEST_TIMEOUT,
                retry=self._retry(),
                job_retry=self._job_retry(),
            ):
                yield dict(row.items())
        except exceptions.Forbidden as error:
            # The job is created in the billing project: bigquery.jobs.create is needed there,
            # read access on the tables (https://cloud.google.com/bigquery/docs/running-queries).
            raise DicomBqError(
                f"BigQuery refused to {what}: {error}. The query job runs in project "
                f"{self.billing_project}: choose the project billed with --billing-project",
                exit_code=EXIT_FAILED,
            ) from None
        except (exceptions.GoogleAPIError, requests.RequestException, OSError) as error:
            raise self._fail(what, error) from None
