"""Re-attaching to a long-running operation: `dicom-bq operations describe` and `wait`."""

from __future__ import annotations

from collections.abc import Callable

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import API_VERSIONS, HealthcareApi
from dicom_bq.clients.operations import OperationState
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.refs import parse_operation_name

__all__ = ["OperationState", "checked_api_version", "follow_operation", "healthcare_api"]


def checked_api_version(value: str) -> str:
    if value not in API_VERSIONS:
        raise DicomBqError(f"--api-version {value!r} is not valid: choose v1 or v1beta1")
    return value


def healthcare_api(*, connection: Connection, api_version: str) -> HealthcareApi:
    return HealthcareApi(connection, checked_api_version(api_version))


def follow_operation(
    *,
    name: str,
    access: GoogleAccess,
    api_version: str,
    timeout: float | None,
    on_update: Callable[[OperationState, float], None] | None,
) -> OperationState:
    """The operation's state once `timeout` is spent (0: one look), or when it is done."""
    from dicom_bq.clients.discovery import ApiCallError
    from dicom_bq.clients.operations import Follower

    operation = parse_operation_name(name)
    api = healthcare_api(connection=access.connection(), api_version=api_version)
    try:
        return Follower(api).follow(operation, timeout, on_update)
    except ApiCallError as error:
        raise DicomBqError(
            f"cannot read operation {operation}: {error.status} {error.reason} {error.message}",
            exit_code=EXIT_FAILED,
        ) from None
