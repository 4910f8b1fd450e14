"""A loopback Cloud Healthcare API: the REST surface dicom-bq uses, with Google's documented semantics.

- dicomStores.get, getDICOMStoreMetrics, export, operations.get for v1 and v1beta1; every export
  body is checked against that version's discovery document shipped in google-api-python-client.
- Export semantics from Google's how-to: missing table created; existing table with force=true or
  WRITE_TRUNCATE overwritten; force=false errors; WRITE_EMPTY errors unless the table is empty;
  WRITE_APPEND appends; filter files read from Cloud Storage (the storage emulator).
- The table is written in the layout the body asks for (default nested, schemaFlattened,
  schemaJson, includeSourceStore) from each instance's full DICOM JSON (WADO-RS metadata), with
  the columns and types Google documents: see tests/fakes/export_shapes.py for the sources.
- DICOMweb goes to a real Orthanc: STOW-RS is forwarded, instance DELETE is translated to Orthanc's
  REST API (Orthanc's plugin has no DICOMweb delete), and the export reads instances by QIDO-RS.
- Faults: queued HTTP statuses, slow answers, and socket-level ends of the exchange (a FIN without
  a status line, a TCP reset, a status line cut short, no answer at all: tests/fakes/http.py,
  SocketFault); PERMISSION_DENIED on the request or in the operation, as while IAM propagates. A
  fault with `after=True` lets the request through first and then loses the answer: the export
  started, the caller never heard of it. `export_posts` counts the export requests that reached
  the fake, `operations` the exports they started.
- dicomStores.create/delete/list and datasets.operations.list (pageSize/pageToken), so a temporary
  store and a lost export answer can be followed. Instances stored through a store created here
  belong to it alone; Orthanc's other instances belong to the stores the test declared.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.fakes import export_shapes
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.discovery import schema_problems
from tests.fakes.export_shapes import uid
from tests.fakes.http import LoopbackFake, Request, Response, SocketFault

_PREFIX = re.compile(r"^/(v1|v1beta1)/")
_STORE = r"projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/:]+"
_FILTER_LINE = re.compile(
    r"^/studies/(?P<study>[0-9.]+)(?:/series/(?P<series>[0-9.]+)(?:/instances/(?P<instance>[0-9.]+))?)?$"
)
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


class Clock(Protocol):
    def monotonic(self) -> float: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class Fault:
    method: str
    path_contains: str
    # An HTTP status, "slow" (answer after `seconds`), or a socket fault: "close" (FIN without a
    # status line), "reset" (TCP RST), "partial" (status line cut short), "hang" (no answer for
    # `seconds`, then FIN).
    kind: int | str
    times: int = 1
    seconds: float = 0.0
    after: bool = False  # process the request, then lose the answer


@dataclass
class FakeOperation:
    name: str
    version: str
    table: str
    disposition: str
    rows: list[dict[str, Any]]
    done_at: float
    schema: list[dict[str, Any]] = field(default_factory=list)  # bigquery v2 TableFieldSchema
    error: dict[str, Any] | None = None
    failures: int = 0
    written: bool = False
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    ended: str | None = None  # OperationMetadata.endTime, set when the fake first sees it done


@dataclass
class FakeHealthcare(LoopbackFake):
    bigquery: FakeBigQuery
    orthanc_url: str = ""
    storage_url: str = ""
    clock: Clock = field(default_factory=RealClock)
    # Done at the first poll unless a test needs a running operation: the CLI then never waits
    # out its first 1-second poll interval (polling itself is tested with running operations).
    export_seconds: float = 0.0
    stores: set[str] = field(default_factory=set)
    # Store configuration as dicomStores.get answers it (streamConfigs, notificationConfig...).
    store_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_stores: set[str] = field(default_factory=set)
    store_of_instance: dict[str, str] = field(default_factory=dict)  # SOP UID -> created store
    deleted_stores: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    caller_denied_exports: int = 0
    agent_denied_requests: int = 0
    agent_denied_until: float | None = None
    agent_email: str = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    operations: dict[str, FakeOperation] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    export_bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    url: str = ""

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            fault = self._take_fault(request)
        if fault is not None and not fault.after:
            if fault.kind in SocketFault.KINDS:
                raise SocketFault(str(fault.kind), fault.seconds)
            if fault.kind == "slow":
                time.sleep(fault.seconds)
            elif isinstance(fault.kind, int):
                return Response.error(fault.kind, "UNAVAILABLE", "injected fault")
        prefix = _PREFIX.match(request.path)
        if not prefix:
            return Response.error(404, "NOT_FOUND", f"no such path {request.path}")
        version, rest = prefix.group(1), request.path[prefix.end() :]
        with self.lock:
            response = self._route(version, rest, request)
        if fault is not None and fault.after:
            # Google did the work; the answer never reaches the caller.
            if fault.kind in SocketFault.KINDS:
                raise SocketFault(str(fault.kind), fault.seconds)
            if fault.kind == "slow":
                time.sleep(fault.seconds)
            elif isinstance(fault.kind, int):
                return Response.error(fault.kind, "INTERNAL", "injected fault after processing")
        return response

    @property
    def export_posts(self) -> int:
        """Export requests that reached the fake (read whole), whatever answer they got."""
        with self.lock:
            return sum(
                1 for r in self.requests if r.method == "POST" and r.path.endswith(":export")
            )

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self.faults:
            # A trailing "$" anchors the fragment at the end of the path.
            where = (
                request.path.endswith(fault.path_contains[:-1])
                if fault.path_contains.endswith("$")
                else fault.path_contains in request.path
            )
            if fault.method == request.method and where and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _route(self, version: str, rest: str, request: Request) -> Response:
        if m := re.fullmatch(rf"({_STORE})/dicomWeb(/.*)", rest):
            return self._dicomweb(m.group(1), m.group(2), request)
        if m := re.fullmatch(rf"({_STORE}):export", rest):
            return (
                self._export(version, m.group(1), request)
                if request.method == "POST"
                else self._bad()
            )
        if m := re.fullmatch(rf"({_STORE}):getDICOMStoreMetrics", rest):
            return self._metrics(m.group(1))
        if m := re.fullmatch(_STORE, rest):
            if m.group(0) not in self.stores:
                return Response.error(404, "NOT_FOUND", f"DICOM store {m.group(0)} not found")
            if request.method == "DELETE":
                return self._delete_store(m.group(0))
            return Response.json(
                {"name": m.group(0), "labels": {}, **self.store_configs.get(m.group(0), {})}
            )
        if m := re.fullmatch(r"(projects/[^/]+/locations/[^/]+/datasets/[^/]+)/dicomStores", rest):
            if request.method == "GET":
                return self._list_stores(m.group(1), request)
            if request.method != "POST":
                return self._bad()
            return self._create_store(version, m.group(1), request)
        if re.fullmatch(r"projects/[^/]+/locations/[^/]+/datasets/[^/]+/operations/[^/]+", rest):
            return self._operation(rest)
        if m := re.fullmatch(r"(projects/[^/]+/locations/[^/]+/datasets/[^/]+)/operations", rest):
            return self._list_operations(m.group(1), request)
        return Response.error(404, "NOT_FOUND", f"no such path {rest}")

    def _bad(self) -> Response:
        return Response.error(405, "INVALID_ARGUMENT", "method not allowed")

    # -- DICOMweb, backed by Orthanc ------------------------------------------------------------

    def _orthanc(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.orthanc_url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _dicomweb(self, store: str, path: str, request: Request) -> Response:
        if store not in self.stores:
            return Response.error(404, "NOT_FOUND", f"DICOM store {store} not found")
        if request.method == "POST" and path == "/studies":
            headers = {
                "Content-Type": request.headers.get("content-type", ""),
                "Accept": "application/dicom+json",
            }
            status, body = self._orthanc("POST", "/dicom-web/studies", request.body, headers)
            if status < 300 and store in self.created_stores:
                for sop in _stored_sop_uids(body):
                    self.store_of_instance[sop] = store
            return Response(status, body, {"Content-Type": "application/dicom+json"})
        m = re.fullmatch(r"/studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)", path)
        if request.method == "DELETE" and m:
            status, body = self._orthanc("POST", "/tools/lookup", m.group(3).encode())
            found = [item for item in json.loads(body or b"[]") if item.get("Type") == "Instance"]
            if not found:
                return Response.error(404, "NOT_FOUND", f"instance {m.group(3)} not found")
            self._orthanc("DELETE", f"/instances/{found[0]['ID']}")
            return Response.json({})
        status, body = self._orthanc(request.method, "/dicom-web" + path)
        return Response(status, body, {"Content-Type": "application/dicom+json"})

    def _create_store(self, version: str, dataset: str, request: Request) -> Response:
        problems = schema_problems("healthcare", version, "DicomStore", request.json())
        store_id = (request.query.get("dicomStoreId") or [""])[0]
        if problems or not re.fullmatch(r"[\w.-]{1,256}", store_id):
            return Response.error(400, "INVALID_ARGUMENT", "; ".join(problems) or "dicomStoreId")
        name = f"{dataset}/dicomStores/{store_id}"
        if name in self.stores:
            return Response.error(409, "ALREADY_EXISTS", f"DICOM store {name} already exists")
        self.stores.add(name)
        self.created_stores.add(name)
        self.store_configs[name] = dict(request.json())
        return Response.json({"name": name, **request.json()})

    def _delete_store(self, name: str) -> Response:
        for sop in [u for u, owner in self.store_of_instance.items() if owner == name]:
            _, body = self._orthanc("POST", "/tools/lookup", sop.encode())
            for item in json.loads(body or b"[]"):
                if item.get("Type") == "Instance":
                    self._orthanc("DELETE", f"/instances/{item['ID']}")
            del self.store_of_instance[sop]
        self.stores.discard(name)
        self.created_stores.discard(name)
        self.deleted_stores.append(name)
        return Response.json({})

    def _list_stores(self, dataset: str, request: Request) -> Response:
        """dicomStores.list (ListDicomStoresResponse: dicomStores, nextPageToken), by name."""
        size = int((request.query.get("pageSize") or ["100"])[0])
        start = int((request.query.get("pageToken") or ["0"])[0])
        mine = sorted(name for name in self.stores if name.startswith(dataset + "/dicomStores/"))
        document: dict[str, Any] = {
            "dicomStores": [
                {"name": name, **self.store_configs.get(name, {})}
                for name in mine[start : start + size]
            ]
        }
        if start + size < len(mine):
            document["nextPageToken"] = str(start + size)
        return Response.json(document)

    def _list_operations(self, dataset: str, request: Request) -> Response:
        size = int((request.query.get("pageSize") or ["100"])[0])
        start = int((request.query.get("pageToken") or ["0"])[0])
        mine = [op for op in self.operations.values() if op.name.startswith(dataset + "/")]
        page = mine[start : start + size]
        document: dict[str, Any] = {
            "operations": [
                self._operation_json(op, self.clock.monotonic() >= op.done_at) for op in page
            ]
        }
        if start + size < len(mine):
            document["nextPageToken"] = str(start + size)
        return Response.json(document)

    def _store_instances(self, store: str) -> list[dict[str, Any]]:
        datasets = self._instances()
        if store in self.created_stores:
            return [d for d in datasets if self.store_of_instance.get(uid(d, SOP_UID)) == store]
        return [d for d in datasets if uid(d, SOP_UID) not in self.store_of_instance]

    def _instances(self) -> list[dict[str, Any]]:
        """Every instance's full DICOM JSON, read study by study with WADO-RS RetrieveMetadata
        (PS3.18 10.4): the export reads all of an instance's elements, not a chosen few."""
        status, body = self._orthanc("GET", f"/dicom-web/studies?includefield={STUDY_UID}")
        assert status == 200, body
        datasets: list[dict[str, Any]] = []
        for study in json.loads(body or b"[]"):
            status, metadata = self._orthanc(
                "GET", f"/dicom-web/studies/{uid(study, STUDY_UID)}/metadata"
            )
            assert status == 200, metadata
            datasets += json.loads(metadata or b"[]")
        return sorted(datasets, key=lambda d: (uid(d, STUDY_UID), uid(d, SOP_UID)))

    def _blob_sizes(self, datasets: list[dict[str, Any]]) -> dict[str, int]:
        """Each instance's stored size in bytes (Orthanc's FileSize), for BlobStorageSize."""
        sizes: dict[str, int] = {}
        for dataset in datasets:
            sop = uid(dataset, SOP_UID)
            _, found = self._orthanc("POST", "/tools/lookup", sop.encode())
            for item in json.loads(found or b"[]"):
                if item.get("Type") == "Instance":
                    _, info = self._orthanc("GET", f"/instances/{item['ID']}")
                    sizes[sop] = int(json.loads(info).get("FileSize", 0))
        return sizes

    def _table(
        self, store: str, destination: dict[str, Any], datasets: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The schema and rows the destination's layout gives (DicomBigQueryDestination)."""
        source = store if destination.get("includeSourceStore") else None
        if "schemaJson" in destination:
            now = datetime.datetime.now(datetime.UTC)
            return export_shapes.json_table(
                datasets, source_store=source, blob_sizes=self._blob_sizes(datasets), now=now
            )
        if "schemaFlattened" in destination:
            return export_shapes.flattened_table(datasets, source_store=source)
        return export_shapes.nested_table(datasets, source_store=source)

    def _metrics(self, store: str) -> Response:
        if store not in self.stores:
            return Response.error(404, "NOT_FOUND", f"DICOM store {store} not found")
        datasets = self._store_instances(store)
        return Response.json(
            {
                "name": store,
                "instanceCount": str(len(datasets)),
                "seriesCount": str(len({uid(d, SERIES_UID) for d in datasets})),
                "studyCount": str(len({uid(d, STUDY_UID) for d in datasets})),
            }
        )

    # -- export and operations ----------------------------------------------------------------

    def _export(self, version: str, store: str, request: Request) -> Response:
        body = request.json()
        self.export_bodies.append(body)
        problems = schema_problems("healthcare", version, "ExportDicomDataRequest", body)
        if problems:
            return Response.error(400, "INVALID_ARGUMENT", "; ".join(problems))
        if store not in self.stores:
            return Response.error(404, "NOT_FOUND", f"DICOM store {store} not found")
        if self.caller_denied_exports > 0:
            self.caller_denied_exports -= 1
            return Response.error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'healthcare.dicomStores.export' denied on resource '{store}'",
            )
        if self.agent_denied_requests > 0:
            self.agent_denied_requests -= 1
            return Response.error(
                403,
                "PERMISSION_DENIED",
                f"The Cloud Healthcare Service Agent {self.agent_email} lacks "
                "bigquery.datasets.get on the destination dataset",
            )
        destination = body.get("bigqueryDestination")
        if not destination or "tableUri" not in destination:
            return Response.error(
                400, "INVALID_ARGUMENT", "bigqueryDestination.tableUri is required"
            )
        if "schemaJson" in destination and "schemaFlattened" in destination:
            # Two layouts for one table; the discovery document cannot say whether they form a
            # proto oneof, so this refusal is UNVERIFIED (dicom-bq never sends both).
            return Response.error(
                400, "INVALID_ARGUMENT", "schemaFlattened and schemaJson are mutually exclusive"
            )
        uri = destination["tableUri"]
        if len(uri) > 2000 or not re.fullmatch(r"bq://[^.]+(\.[^.]+)*\.[A-Za-z0-9_]+\.[^.]+", uri):
            return Response.error(400, "INVALID_ARGUMENT", f"invalid BigQuery table URI {uri!r}")
        table = uri[len("bq://") :]
        dataset = table.rsplit(".", 1)[0]
        dataset_name = re.sub(r"/dicomStores/.*", "", store)
        number = len(self.operations) + 1000
        while f"{dataset_name}/operations/{number}" in self.operations:
            number += 1  # a name Google gives is new: never one a test put there
        name = f"{dataset_name}/operations/{number}"
        operation = FakeOperation(
            name,
            version,
            table,
            self._disposition(destination),
            [],
            self.clock.monotonic() + self.export_seconds,
        )
        self.operations[name] = operation
        if self.agent_denied_until is not None and self.clock.monotonic() < self.agent_denied_until:
            operation.error = {
                "code": 7,
                "message": f"{self.agent_email} does not have bigquery.tables.create permission for dataset {dataset}",
            }
        elif dataset not in self.bigquery.datasets:
            operation.error = {"code": 5, "message": f"BigQuery dataset {dataset} not found"}
        elif self._refuses(operation, destination):
            operation.error = {
                "code": 9,
                "message": f"BigQuery table {table} already exists and the write disposition does not allow writing to it",
            }
        else:
            try:
                datasets = self._selected(store, body.get("filterConfig"))
                operation.schema, operation.rows = self._table(store, destination, datasets)
            except ValueError as error:
                operation.error = {"code": 3, "message": str(error)}
        return Response.json(self._operation_json(operation, done=False))

    def _disposition(self, destination: dict[str, Any]) -> str:
        disposition = destination.get("writeDisposition", "WRITE_DISPOSITION_UNSPECIFIED")
        if disposition != "WRITE_DISPOSITION_UNSPECIFIED":
            return str(disposition)
        return "FORCE_TRUE" if destination.get("force") else "FORCE_FALSE"

    def _refuses(self, operation: FakeOperation, destination: dict[str, Any]) -> bool:
        existing = self.bigquery.tables.get(operation.table)
        if existing is None:
            return False
        if operation.disposition == "FORCE_FALSE":
            return True
        return operation.disposition == "WRITE_EMPTY" and len(existing) > 0

    def _selected(self, store: str, filter_config: dict[str, Any] | None) -> list[dict[str, Any]]:
        rows = self._store_instances(store)
        if not filter_config:
            return rows
        uri = filter_config["resourcePathsGcsUri"]
        bucket, _, name = uri[len("gs://") :].partition("/")
        quoted = urllib.parse.quote(name, safe="")
        try:
            with urllib.request.urlopen(
                f"{self.storage_url}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=30
            ) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError:
            raise ValueError(f"filter file {uri} not found") from None
        wanted = []
        for number, line in enumerate(re.split(r"\r?\n", text), start=1):
            if not line:
                continue
            match = _FILTER_LINE.match(line)
            if not match:
                raise ValueError(f"filter file line {number} is not a resource path: {line!r}")
            wanted.append(match)
        return [row for row in rows if any(_covers(m, row) for m in wanted)]

    def _operation(self, name: str) -> Response:
        operation = self.operations.get(name)
        if operation is None:
            return Response.error(404, "NOT_FOUND", f"operation {name} not found")
        done = self._write_if_done(operation)
        return Response.json(self._operation_json(operation, done))

    def settle(self) -> None:
        """Every export whose time has come writes its table, whether or not anyone polled it:
        Google runs an operation whose start answer was lost all the same. A test calls it before
        counting rows (a poll writes only the polled operation's; operations a test builds
        itself are written here too unless marked `written`)."""
        with self.lock:
            for operation in list(self.operations.values()):
                self._write_if_done(operation)

    def _write_if_done(self, operation: FakeOperation) -> bool:
        done = self.clock.monotonic() >= operation.done_at
        if done and not operation.written and operation.error is None:
            operation.written = True
            self.bigquery.write(
                operation.table,
                schema=operation.schema,
                rows=operation.rows,
                append=operation.disposition == "WRITE_APPEND",
            )
            self.bigquery.modified_ms[operation.table] = int(time.time() * 1000)
        return done

    def _operation_json(self, operation: FakeOperation, done: bool) -> dict[str, Any]:
        total = len(operation.rows)
        counter: dict[str, str] = {}
        if done:
            counter = {"success": str(total - operation.failures)} if total else {}
            if operation.failures:
                counter["failure"] = str(operation.failures)
        elif total:
            counter = {"pending": str(total)}
        document: dict[str, Any] = {
            "name": operation.name,
            "metadata": {
                "@type": f"type.googleapis.com/google.cloud.healthcare.{operation.version}.OperationMetadata",
                "apiMethodName": f"google.cloud.healthcare.{operation.version}.dicom.DicomService.ExportDicomData",
                "createTime": operation.created,
                "logsUrl": f"https://console.cloud.google.com/logs/query?operation={operation.name.rsplit('/', 1)[-1]}",
                "counter": counter,
            },
        }
        if done:
            if operation.ended is None:
                operation.ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            document["metadata"]["endTime"] = operation.ended
            document["done"] = True
            if operation.error:
                document["error"] = operation.error
            else:
                document["response"] = {
                    "@type": f"type.googleapis.com/google.cloud.healthcare.{operation.version}.dicom.ExportDicomDataResponse"
                }
        return document


def _stored_sop_uids(body: bytes) -> list[str]:
    """SOP Instance UIDs in a STOW-RS answer: ReferencedSOPSequence (0008,1199) items'
    ReferencedSOPInstanceUID (0008,1155), DICOM PS3.18 Table 10.5.3-1."""
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return []
    items = (document.get("00081199") or {}).get("Value") or []
    return [
        str(value) for item in items for value in ((item.get("00081155") or {}).get("Value") or [])
    ]


def _covers(match: re.Match[str], dataset: dict[str, Any]) -> bool:
    return (
        match.group("study") == uid(dataset, STUDY_UID)
        and match.group("series") in (None, uid(dataset, SERIES_UID))
        and match.group("instance") in (None, uid(dataset, SOP_UID))
    )
