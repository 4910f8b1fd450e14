"""The Cloud Healthcare API calls dicom-bq makes, through Google's discovery client.

The discovery documents are the static copies shipped in google-api-python-client (v1 and
v1beta1), so no discovery request is made and the request shapes are Google's own.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httplib2
from googleapiclient.errors import HttpError

from dicom_bq.clients.discovery import (
    REQUEST_TIMEOUT,
    ApiCallError,
    GoogleApi,
    discovery_document,
    error_details,
)
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.errors import DicomBqError
from dicom_bq.refs import WriteDisposition

__all__ = [
    "API_VERSIONS",
    "ApiCallError",
    "ExportAnswerLostError",
    "ExportNotStartedError",
    "ExportRequest",
    "ExportSchema",
    "HealthcareApi",
    "check_export_body",
    "parse_export_schema",
    "undefined_fields",
]

API_VERSIONS = ("v1", "v1beta1")


class ExportSchema(enum.StrEnum):
    """The table layout an export writes, chosen in DicomBigQueryDestination (discovery documents
    healthcare v1 and v1beta1, schemas.*DicomBigQueryDestination): no field is the default nested
    schema (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-schema),
    `schemaFlattened: {}` one column per tag, `schemaJson: {}` every tag in one JSON column."""

    NESTED = "nested"
    FLATTENED = "flattened"
    JSON = "json"


def parse_export_schema(value: str) -> ExportSchema:
    try:
        return ExportSchema(value.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in ExportSchema)
        raise DicomBqError(
            f"--schema {value!r} is not a table layout: choose one of {choices} (nested is the "
            "default: one column per DICOM keyword, sequences as records)"
        ) from None


# The option that puts each field in the body, so a refusal names what the user typed.
_OPTION_OF_FIELD = {
    "bigqueryDestination.schemaFlattened": "--schema flattened",
    "bigqueryDestination.schemaJson": "--schema json",
    "bigqueryDestination.includeSourceStore": "--include-source-store",
    "bigqueryDestination.writeDisposition": "--write-disposition",
    "bigqueryDestination.force": "--force/--no-force",
    "filterConfig": "--filter",
    "filterConfig.resourcePathsGcsUri": "--filter",
}


@dataclass(frozen=True)
class ExportRequest:
    store: str
    table_uri: str
    write_disposition: WriteDisposition | None = None
    force: bool | None = None
    filter_uri: str | None = None
    schema: ExportSchema = ExportSchema.NESTED
    include_source_store: bool = False

    def body(self) -> dict[str, Any]:
        destination: dict[str, Any] = {"tableUri": self.table_uri}
        # The API takes one of the two; writeDisposition wins when both are sent, so never both.
        if self.force is not None:
            destination["force"] = self.force
        else:
            destination["writeDisposition"] = (
                self.write_disposition or WriteDisposition.WRITE_EMPTY
            ).value
        # The presence of the empty message selects the layout ("Setting this field will use
        # flattened DICOM instances schema", DicomBigQueryDestination.schemaFlattened); the
        # default nested layout is the absence of both.
        if self.schema is ExportSchema.FLATTENED:
            destination["schemaFlattened"] = {}
        elif self.schema is ExportSchema.JSON:
            destination["schemaJson"] = {}
        if self.include_source_store:
            destination["includeSourceStore"] = True
        body: dict[str, Any] = {"bigqueryDestination": destination}
        if self.filter_uri:
            body["filterConfig"] = {"resourcePathsGcsUri": self.filter_uri}
        return body


def undefined_fields(schemas: dict[str, Any], *, schema_name: str, value: Any) -> list[str]:
    """Field paths of `value` that the discovery schema `schema_name` does not define.

    The API rejects unknown fields with INVALID_ARGUMENT ("Invalid JSON payload received.
    Unknown name ..."), so a field missing from the document is an export that cannot run.
    """

    def walk(schema: dict[str, Any], item: Any, path: str) -> list[str]:
        if "$ref" in schema:
            schema = schemas[schema["$ref"]]
        if isinstance(item, dict) and schema.get("type") == "object":
            properties = schema.get("properties", {})
            found = []
            for key, inner in item.items():
                where = f"{path}.{key}" if path else key
                if key in properties:
                    found += walk(properties[key], inner, where)
                elif "additionalProperties" not in schema:
                    found.append(where)
            return found
        if isinstance(item, list) and "items" in schema:
            return [p for inner in item for p in walk(schema["items"], inner, path)]
        return []

    return sorted(set(walk({"$ref": schema_name}, value, "")))


def _export_method(document: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = document
    for name in ("projects", "locations", "datasets", "dicomStores"):
        resource = resource["resources"][name]
    method: dict[str, Any] = resource["methods"]["export"]
    return method


def _export_body_gaps(api_version: str, body: dict[str, Any]) -> tuple[list[str], str]:
    document = discovery_document("healthcare", api_version)
    request_schema = str(_export_method(document)["request"]["$ref"])
    return undefined_fields(document["schemas"], schema_name=request_schema, value=body), str(
        document.get("revision", "?")
    )


def check_export_body(api_version: str, body: dict[str, Any]) -> None:
    """Refuse, before any request, an export body with a field the API version in use lacks,
    as the discovery document shipped in google-api-python-client defines that version."""
    missing, revision = _export_body_gaps(api_version, body)
    if not missing:
        return
    options = sorted({_OPTION_OF_FIELD.get(field, field) for field in missing})
    others = [v for v in API_VERSIONS if v != api_version and not _export_body_gaps(v, body)[0]]
    remedy = (
        f"use --api-version {others[0]}, whose document has it"
        if others
        else f"drop {' and '.join(options)}: no API version dicom-bq uses "
        f"({', '.join(API_VERSIONS)}) has it"
    )
    raise DicomBqError(
        f"{' and '.join(options)} needs {', '.join(missing)} in the export request, which the "
        f"Cloud Healthcare API {api_version} does not define (discovery document revision "
        f"{revision}): {remedy}. Nothing was sent."
    )


class ExportNotStartedError(Exception):
    """The export request was refused before Google acted on it: sending it again is safe."""


class ExportAnswerLostError(Exception):
    """The export request may have started an operation whose answer never arrived: a 5xx
    after sending, a reset connection, a timeout. Sending it again may export twice."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


# 429 RESOURCE_EXHAUSTED is a refusal (quota), not a failure half-way
# (https://cloud.google.com/apis/design/errors#handling_errors: "retry" for 429 and 503, but a
# 503 or 500 may come after the work was done, and a non-idempotent POST is not retried blindly).
_REFUSED_STATUSES = frozenset({429})


class HealthcareApi(GoogleApi):
    def __init__(
        self,
        connection: Connection,
        api_version: str = "v1",
        retry: RetryPolicy | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        endpoint = connection.healthcare()
        super().__init__(
            "healthcare",
            api_version,
            endpoint,
            connection.credentials(endpoint.emulated),
            retry,
            request_timeout,
        )
        self.api_version = api_version
        self.base_url = f"{endpoint.url}{api_version}/"

    def _stores(self) -> Any:
        return self.collection("projects.locations.datasets.dicomStores")

    def export_once(self, request: ExportRequest) -> dict[str, Any]:
        """One export POST, never retried here (nor by the transport: clients/transport.py turns
        httplib2's own resend into AnswerLostError): the caller decides, knowing what it risks."""
        body = request.body()
        check_export_body(self.api_version, body)
        call = self._stores().export(name=request.store, body=body)
        try:
            return dict(call.execute(num_retries=0))
        except HttpError as error:
            status = int(error.resp.status)
            if status in _REFUSED_STATUSES:
                raise ExportNotStartedError(f"HTTP {status}") from None
            if status >= 500:
                raise ExportAnswerLostError(f"HTTP {status} after the request was sent") from None
            raise error_details(status, error.content) from None
        except ConnectionRefusedError:
            raise ExportNotStartedError("connection refused") from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
            raise ExportAnswerLostError(
                f"{type(error).__name__} before the answer arrived"
            ) from None

    def list_operations(self, dataset: str, page_token: str | None = None) -> dict[str, Any]:
        operations = self.collection("projects.locations.datasets.operations")
        return dict(self.call(operations.list(name=dataset, pageSize=100, pageToken=page_token)))

    def list_stores(self, dataset: str, page_token: str | None = None) -> dict[str, Any]:
        """dicomStores.list: a page of the dataset's DICOM stores (ListDicomStoresResponse:
        dicomStores, nextPageToken); needs healthcare.dicomStores.list on the dataset."""
        return dict(
            self.call(self._stores().list(parent=dataset, pageSize=100, pageToken=page_token))
        )

    def create_store(self, dataset: str, store_id: str, labels: dict[str, str]) -> dict[str, Any]:
        return dict(
            self.call(
                self._stores().create(
                    parent=dataset, dicomStoreId=store_id, body={"labels": labels}
                )
            )
        )

    def delete_store(self, name: str) -> None:
        self.call(self._stores().delete(name=name))

    def get_operation(self, name: str) -> dict[str, Any]:
        operations = self.collection("projects.locations.datasets.operations")
        return dict(self.call(operations.get(name=name)))

    def get_store(self, name: str) -> dict[str, Any]:
        return dict(self.call(self._stores().get(name=name)))

    def store_metrics(self, name: str) -> dict[str, Any]:
        return dict(self.call(self._stores().getDICOMStoreMetrics(name=name)))

    def dicomweb_url(self, store: str) -> str:
        return f"{self.base_url}{store}/dicomWeb"

    def store_instance(self, store: str, instance: bytes) -> dict[str, Any]:
        """STOW-RS one Part 10 instance as multipart/related, which every DICOMweb server takes
        (PS3.18 10.5). A POST through GoogleApi.raw: the transport sends it once
        (clients/transport.py); raw's RetryPolicy, not the transport, may send it again after a
        lost answer or a 5xx, the same instance under the same SOP Instance UID."""
        boundary = f"dicom-bq-{uuid.uuid4().hex}"
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + instance
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        content = self.raw("POST", f"{self.dicomweb_url(store)}/studies", body, headers)
        return json.loads(content) if content.strip() else {}

    def delete_instance(self, store: str, study: str, series: str, instance: str) -> None:
        path = f"/studies/{study}/series/{series}/instances/{instance}"
        self.raw("DELETE", self.dicomweb_url(store) + path, None, {})
