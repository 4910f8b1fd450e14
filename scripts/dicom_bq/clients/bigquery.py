"""BigQuery reads the CLI needs: does a table exist, how many rows, is this instance's row there."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.filters.queries import Query, instance_row
from dicom_bq.refs import TableUri


class BigQueryTables:
    def __init__(self, connection: Connection, billing_project: str) -> None:
        from google.cloud import bigquery

        self._bigquery = bigquery
        self._client = connection.bigquery_client(billing_project)

    def _fail(self, what: str, error: Exception) -> DicomBqError:
        return DicomBqError(f"BigQuery refused to {what}: {error}", exit_code=EXIT_FAILED)

    def row_count(self, table: TableUri) -> int | None:
        """Rows in the table, those still in its streaming buffer included, or None when it
        does not exist. numRows leaves out rows streamed in the last minutes
        (bigquery v2 Table.streamingBuffer.estimatedRows): a stream table can look empty."""
        from google.api_core import exceptions

        try:
            found = self._client.get_table(table.table_id)
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as error:
            raise self._fail(f"describe {table.uri}", error) from None
        buffer = found.streaming_buffer
        buffered = int(buffer.estimated_rows or 0) if buffer is not None else 0
        return int(found.num_rows or 0) + buffered

    def dataset_access(self, project: str, dataset: str) -> list[dict[str, Any]] | None:
        """The dataset's access entries (role, member kinds), or None when it does not exist."""
        from google.api_core import exceptions

        try:
            found = self._client.get_dataset(f"{project}.{dataset}")
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as error:
            raise self._fail(f"describe dataset {project}:{dataset}", error) from None
        return [entry.to_api_repr() for entry in found.access_entries]

    def instance_rows(self, table: TableUri, sop_instance_uid: str) -> list[dict[str, Any]]:
        """The exported rows of one instance; the UID travels as a query parameter."""
        return list(self.run(instance_row(table, sop_instance_uid), what=f"query {table.uri}"))

    def run(
        self, query: Query, page_size: int = 10_000, what: str = "run the query"
    ) -> Iterator[dict[str, Any]]:
        """Rows of `query`, fetched a page at a time so a large result is never held whole."""
        from google.api_core import exceptions

        config = self._bigquery.QueryJobConfig(
            query_parameters=[
                self._bigquery.ScalarQueryParameter(name, kind, value)
                for name, kind, value in query.parameters
            ]
        )
        try:
            for row in self._client.query_and_wait(
                query.sql, job_config=config, page_size=page_size
            ):
                yield dict(row.items())
        except exceptions.GoogleAPIError as error:
            raise self._fail(what, error) from None
