"""Cloud Storage objects the CLI writes: filter files.

Every object write is sent once. google-cloud-storage (3.x) retries uploads by default
(`Blob.upload_from_string`/`upload_from_filename`, `retry=DEFAULT_RETRY`: ConnectionError, 429
and 5xx, google/cloud/storage/retry.py), so a write whose answer was lost after Cloud Storage
stored the object is sent and stored again; the tool passes `retry=None` ("A None value will
disable retries", same docstring). Below it, requests' HTTPAdapter retries nothing
(`DEFAULT_RETRIES = 0`, `Retry(0, read=False)`) and urllib3 closes a connection that an exception
interrupted instead of returning it to the pool (connectionpool.urlopen, `clean_exit`).
Cloud Storage's own retry guide classes an upload without a precondition as not idempotent
(https://cloud.google.com/storage/docs/retry-strategy).

Every request has a deadline (`timeout=`, requests' connect and read timeouts), and the retries
of a delete stop RETRY_DEADLINE seconds after the first try (Retry.with_timeout; the library's
default goes on for 120 s): a closed or silent STORAGE_EMULATOR_HOST port ends the command with
a message naming the endpoint. A write that never reached the server (its connection was
refused, or not made in time) is said to be unwritten.

Every object write, and the delete of an object whose written generation is known
(delete_written), carries a precondition on the object's generation, the JSON API's
`ifGenerationMatch` query parameter (storage v1 discovery document, objects.insert and
objects.delete: "Makes the operation conditional on whether the object's current generation
matches the given value. Setting to 0 makes the operation succeed only if there are no live
versions of the object."). A mismatch is answered 412 Precondition
Failed (https://cloud.google.com/storage/docs/request-preconditions), and nothing is written or
deleted: a create-only write (ABSENT) never replaces an object, a replacement replaces only the
generation it read, so a writer that slips in between the read and the write is never silently
overwritten. delete_written also names the generation (objects.delete `generation`: "If present,
permanently deletes a specific revision of this object"), so no other revision is deleted even
where ifGenerationMatch on a delete is ignored (fake-gcs-server v1.56.1 ignores it: tests/peers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_bq.clients.endpoints import Connection, Endpoint
from dicom_bq.clients.retry import connection_failure
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri

# Blob.upload_from_*(retry=...): None sends the request once (google/cloud/storage/blob.py).
WRITE_ONCE = None
# Seconds to connect, and to wait for each answer (google-cloud-storage's default is 60 s for
# both); seconds after which the retries of an idempotent request stop.
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
RETRY_DEADLINE = 30.0
# ifGenerationMatch=0: the write succeeds only if no live version of the object exists.
ABSENT = 0


@dataclass(frozen=True)
class StoredObject:
    """An object as one write left it: its generation names exactly that content."""

    uri: GcsUri
    size: int
    generation: int | None  # None only if the answer did not say (Cloud Storage always does)


def _stored(target: GcsUri, blob: Any) -> StoredObject:
    """The object as the upload's answer describes it (objects.insert returns the Object)."""
    generation = int(blob.generation) if blob.generation is not None else None
    return StoredObject(uri=target, size=int(blob.size or 0), generation=generation)


class GenerationMismatchError(DicomBqError):
    """412 Precondition Failed: the object's live generation was not `expected` (ABSENT: some
    object existed), so nothing was written or deleted. The flows say what it means to them."""

    def __init__(self, target: GcsUri, expected: int, action: str) -> None:
        held = "no object" if expected == ABSENT else f"generation {expected}"
        super().__init__(
            f"{action} {target.uri} was refused: it was conditioned on {held} there, and the "
            "object there is another now (412 Precondition Failed); nothing was changed",
            exit_code=EXIT_FAILED,
        )
        self.target = target
        self.expected = expected


class ObjectUnreadableError(DicomBqError):
    """403 on objects.get: the caller may not read the object's metadata (storage.objects.get),
    which a creator-only role (roles/storage.objectCreator) lacks."""


def remove_command(stored: StoredObject) -> str:
    """The gcloud command that deletes this write of the object and nothing written after it."""
    guard = f" --if-generation-match={stored.generation}" if stored.generation else ""
    return f"gcloud storage rm {stored.uri.uri}{guard}"


def _timeout() -> tuple[float, float]:
    return (CONNECT_TIMEOUT, READ_TIMEOUT)


def _never_connected(error: BaseException) -> bool:
    """Whether the request never left: its connection was refused or not made in time."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(error, requests.ConnectTimeout):
        return True
    while isinstance(getattr(error, "cause", None), BaseException):  # a RetryError's last
        error = error.cause  # type: ignore[attr-defined]
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError) or isinstance(
        error.__context__, NewConnectionError
    )


def _where(endpoint: Endpoint) -> str:
    variable = " (STORAGE_EMULATOR_HOST)" if endpoint.emulated else ""
    return f"Cloud Storage at {endpoint.url}{variable}"


def _write_failed(
    target: GcsUri, error: Exception, endpoint: Endpoint, expected: int
) -> DicomBqError:
    from google.api_core import exceptions

    if isinstance(error, exceptions.PreconditionFailed):
        return GenerationMismatchError(target, expected, "writing")
    if isinstance(error, exceptions.GoogleAPIError):
        return DicomBqError(f"could not write {target.uri}: {error}", exit_code=EXIT_FAILED)
    if _never_connected(error):
        return DicomBqError(
            f"could not write {target.uri}: {_where(endpoint)} could not be reached "
            f"({connection_failure(error)}); nothing was written. "
            "Check that the endpoint is right and reachable, then run the command again",
            exit_code=EXIT_FAILED,
        )
    return DicomBqError(
        f"could not write {target.uri}: the answer was lost ({type(error).__name__}: {error}). "
        "The write is not sent again: the object may or may not have been written; check with "
        f"`gcloud storage ls -l {target.uri}`, then run the command again",
        exit_code=EXIT_FAILED,
    )


class StorageObjects:
    """The objects of one bucket. Its client acts for no project: objects.get, insert and delete
    name the bucket and the object alone (storage v1 discovery document), so the bucket is never
    taken for a project, and no project is looked up (Connection.storage_client)."""

    def __init__(self, connection: Connection, bucket: str) -> None:
        self.bucket = bucket
        self._bucket = connection.storage_client().bucket(bucket)
        self._endpoint = connection.storage()

    def _bucket_of(self, target: GcsUri) -> Any:
        """The client's handle on this bucket, for an object in it (any other is a mistake of the
        caller's, refused before a request)."""
        if target.bucket != self.bucket:
            raise ValueError(
                f"{target.uri} is not in gs://{self.bucket}, the bucket of these objects"
            )
        return self._bucket

    def generation(self, target: GcsUri) -> int | None:
        """The live generation of the object (objects.get), None when there is none. Retried
        (a read) until RETRY_DEADLINE; a refusal (403: no storage.objects.get) is an error."""
        import requests
        from google.api_core import exceptions

        bucket = self._bucket_of(target)
        try:
            blob = bucket.get_blob(target.name, retry=_bounded_retry(), timeout=_timeout())
        except (exceptions.RetryError, requests.RequestException) as error:
            raise self._unanswered(error) from None
        except exceptions.Forbidden as error:
            raise ObjectUnreadableError(
                f"could not read {target.uri}: {error}", exit_code=EXIT_FAILED
            ) from None
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(
                f"could not read {target.uri}: {error}", exit_code=EXIT_FAILED
            ) from None
        return None if blob is None or blob.generation is None else int(blob.generation)

    def upload_text(
        self, target: GcsUri, text: str, *, if_generation_match: int = ABSENT
    ) -> StoredObject:
        """One upload of `text`, on the precondition of upload_file (create-only by default)."""
        return self._upload(
            target,
            None,
            if_generation_match,
            lambda blob, options: blob.upload_from_string(text, **options),
        )

    def upload_file(
        self, source: str, target: GcsUri, chunk_size: int, *, if_generation_match: int = ABSENT
    ) -> StoredObject:
        """One upload of the file, written only if the object's live generation is
        `if_generation_match` (ABSENT: there is none), else GenerationMismatchError. A single
        multipart request up to 8 MiB (google-cloud-storage's _MAX_MULTIPART_SIZE), else
        resumable in `chunk_size` pieces (a multiple of 256 KiB; the precondition is sent when
        the session starts and holds for the object it finalizes); nothing of it is sent twice,
        although the precondition would make a resend harmless."""
        return self._upload(
            target,
            chunk_size,
            if_generation_match,
            lambda blob, options: blob.upload_from_filename(source, **options),
        )

    def _upload(
        self,
        target: GcsUri,
        chunk_size: int | None,
        if_generation_match: int,
        send: Callable[[Any, dict[str, Any]], None],
    ) -> StoredObject:
        """The one upload path: `send(blob, options)` writes once (WRITE_ONCE), conditioned on
        `if_generation_match`; a refusal or a failure becomes _write_failed's error."""
        import requests
        from google.api_core import exceptions

        bucket = self._bucket_of(target)
        try:
            blob = bucket.blob(target.name, chunk_size=chunk_size)
            send(
                blob,
                {
                    "content_type": "text/plain",
                    "if_generation_match": if_generation_match,
                    "retry": WRITE_ONCE,
                    "timeout": _timeout(),
                },
            )
        except (exceptions.GoogleAPIError, requests.RequestException) as error:
            raise _write_failed(target, error, self._endpoint, if_generation_match) from None
        return _stored(target, blob)

    def delete(self, target: GcsUri) -> None:
        """Delete the object; a missing one is no error. Retried (a resent delete finds the object
        gone: 404) until RETRY_DEADLINE."""
        self._delete(target, None)

    def delete_written(self, stored: StoredObject) -> bool:
        """Delete the object only as this tool wrote it: the request names its generation
        (objects.delete `generation`: that revision and no other) and is conditioned on it
        (`ifGenerationMatch`), so an object another writer put there since is left alone
        (GenerationMismatchError, or False when that generation is gone). True when deleted."""
        if stored.generation is None:
            raise DicomBqError(
                f"{stored.uri.uri}: Cloud Storage did not say which generation was written, so "
                "it is not deleted",
                exit_code=EXIT_FAILED,
            )
        return self._delete(stored.uri, stored.generation)

    def _delete(self, target: GcsUri, generation: int | None) -> bool:
        import requests
        from google.api_core import exceptions

        bucket = self._bucket_of(target)
        try:
            bucket.blob(target.name, generation=generation).delete(
                if_generation_match=generation, retry=_bounded_retry(), timeout=_timeout()
            )
        except exceptions.NotFound:
            return False
        except exceptions.PreconditionFailed:
            raise GenerationMismatchError(target, generation or ABSENT, "deleting") from None
        except (exceptions.RetryError, requests.RequestException) as error:
            raise self._unanswered(error) from None
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(f"Cloud Storage refused: {error}", exit_code=EXIT_FAILED) from None
        return True

    def _unanswered(self, error: Exception) -> DicomBqError:
        from google.api_core import exceptions

        cause = error.cause if isinstance(error, exceptions.RetryError) else error
        return DicomBqError(
            f"{_where(self._endpoint)} did not answer ({type(cause).__name__}: "
            f"{connection_failure(cause)}; tried for up to {RETRY_DEADLINE:g}s)",
            exit_code=EXIT_FAILED,
        )


def _bounded_retry() -> Any:
    """google-cloud-storage's DEFAULT_RETRY for reads and deletes (both idempotent: a resent
    delete finds the object gone), stopped after RETRY_DEADLINE."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE)
