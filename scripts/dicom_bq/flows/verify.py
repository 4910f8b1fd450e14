"""`dicom-bq verify`: prove the export path works, step by step, and clean up after itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dicom_bq.clients.healthcare import ApiCallError, HealthcareApi
from dicom_bq.clients.operations import Follower, OperationState
from dicom_bq.clients.retry import Clock, SystemClock
from dicom_bq.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.export import ConfirmTruncate, ExportObserver
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.flows.seed import SyntheticInstance, synthetic_instance
from dicom_bq.infra import naming
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from dicom_bq.stack.outputs import VerifyTarget

FILTER_PREFIX = "dicom-bq/verify"
TEMPORARY_STORE_PREFIX = "dicom-bq-verify-"
# Dataset roles that let the agent create and write tables: legacy names as the dataset's access
# list shows them, and the predefined roles (https://cloud.google.com/bigquery/docs/access-control).
WRITER_ROLES = frozenset(
    {
        "WRITER",
        "OWNER",
        "roles/bigquery.dataEditor",
        "roles/bigquery.dataOwner",
        "roles/bigquery.admin",
    }
)


class RowSource(Protocol):
    def row_count(self, table: Any) -> int | None: ...

    def instance_rows(self, table: Any, sop_instance_uid: str) -> list[dict[str, Any]]: ...

    def dataset_access(self, project: str, dataset: str) -> list[dict[str, Any]] | None: ...


@dataclass(frozen=True)
class VerifyOptions:
    """How to prove the path. By default a temporary store in the stack's Healthcare dataset is
    seeded, exported and deleted: same project, agent, location and CMEK as the real store,
    whose patient data is only read."""

    seed: bool = True
    in_place: bool = False  # seed the real store instead
    accept_stream_rows: bool = False  # ...even though its streams and topic keep the instance
    keep: bool = False
    timeout: float | None = None


def stream_tables(store: dict[str, Any]) -> list[str]:
    return [
        str((c.get("bigqueryDestination") or {}).get("tableUri"))
        for c in store.get("streamConfigs") or []
        if (c.get("bigqueryDestination") or {}).get("tableUri")
    ]


def notification_topics(store: dict[str, Any]) -> list[str]:
    # The API has notificationConfig and the newer notificationConfigs list (healthcare v1
    # discovery document, DicomStore).
    configs = [store.get("notificationConfig") or {}, *(store.get("notificationConfigs") or [])]
    return [str(c["pubsubTopic"]) for c in configs if c.get("pubsubTopic")]


class FilterStore(Protocol):
    def upload_text(self, target: GcsUri, text: str) -> None: ...

    def delete(self, target: GcsUri) -> None: ...


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class VerifyReport:
    steps: list[StepResult] = field(default_factory=list)
    operation: OperationState | None = None
    exit_code: int = EXIT_OK

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "steps": [step.as_dict() for step in self.steps],
            "operation": self.operation.as_dict() if self.operation else None,
        }


class StepFailedError(Exception):
    def __init__(self, detail: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exit_code = exit_code


@dataclass
class Verifier:
    api: HealthcareApi
    rows: RowSource
    filters: FilterStore | None
    exporter: Exporter
    follower: Follower
    clock: Clock = field(default_factory=SystemClock)
    on_step: Callable[[StepResult], None] | None = None
    on_update: Callable[[OperationState, float], None] | None = None
    on_start: Callable[[str], None] | None = None
    on_wait: Callable[[str, float], None] | None = None
    # Asked before WRITE_TRUNCATE into a table that is not the tool's own; raises to refuse.
    confirm_truncate: Callable[[TableUri], None] | None = None

    def __post_init__(self) -> None:
        self.report = VerifyReport()

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Times one step; the body appends its detail; StepFailed or DicomBqError fail it."""
        started = self.clock.monotonic()
        detail: list[str] = []
        try:
            yield detail
        except (StepFailedError, DicomBqError) as error:
            message = error.detail if isinstance(error, StepFailedError) else error.message
            self._record(StepResult(name, False, self.clock.monotonic() - started, message))
            self.report.exit_code = error.exit_code
            raise
        self._record(StepResult(name, True, self.clock.monotonic() - started, " ".join(detail)))

    def _record(self, result: StepResult) -> None:
        self.report.steps.append(result)
        if self.on_step:
            self.on_step(result)

    def run(self, target: VerifyTarget, options: VerifyOptions | None = None) -> VerifyReport:
        options = options or VerifyOptions()
        instance: SyntheticInstance | None = None
        filter_uri: GcsUri | None = None
        temporary: StoreName | None = None
        seeded = target.store
        try:
            store, metrics = self._check_store(target)
            if target.table.table != naming.VERIFICATION_TABLE and self.confirm_truncate:
                # Only the tool's own table is truncated without a question; asked before
                # anything is created.
                with self.step("table") as detail:
                    self.confirm_truncate(target.table)
                    detail.append(f"{target.table.uri} may be truncated")
            if options.seed:
                if options.in_place:
                    self._refuse_lasting_copies(target, store, options)
                else:
                    temporary = self._create_temporary_store(target)
                    seeded = temporary
                instance = self._seed(seeded)
                filter_uri = self._write_filter(target, instance)
            state = self._export(seeded, target, filter_uri, options.timeout)
            if instance:
                self._find_row(target, instance)
            else:
                self._compare_counts(target, state, metrics)
        except (StepFailedError, DicomBqError):
            pass
        finally:
            # Also on Ctrl-C: the temporary store and the filter file never outlive the run.
            if not options.keep and (instance or filter_uri or temporary):
                self._clean_up(seeded, instance, filter_uri, temporary)
            elif temporary is not None:
                self._record(
                    StepResult("keep", True, 0.0, f"kept temporary store {temporary.name}")
                )
        return self.report

    def _check_store(self, target: VerifyTarget) -> tuple[dict[str, Any], dict[str, Any]]:
        """The real store, read only: its counts, and each stream table's dataset and grant."""
        with self.step("store") as detail:
            try:
                store = self.api.get_store(target.store.name)
                metrics = self.api.store_metrics(target.store.name)
            except ApiCallError as error:
                raise StepFailedError(
                    f"cannot read DICOM store {target.store.name}: {error.status} {error.reason} "
                    f"{error.message}"
                ) from None
            detail.append(
                f"{target.store.name}: {int(metrics.get('instanceCount') or 0)} instances, "
                f"{int(metrics.get('seriesCount') or 0)} series, "
                f"{int(metrics.get('studyCount') or 0)} studies"
            )
            for uri in stream_tables(store):
                detail.append(f"; stream {self._check_stream(uri, target.agent_email)}")
            for topic in notification_topics(store):
                detail.append(f"; notifies {topic}")
            return store, metrics

    def _check_stream(self, uri: str, agent_email: str | None) -> str:
        table = TableUri.parse(uri, flag="streamConfigs.tableUri")
        access = self.rows.dataset_access(table.project, table.dataset)
        if access is None:
            raise StepFailedError(
                f"the store streams to {uri}, whose dataset {table.project}:{table.dataset} does "
                "not exist: streaming fails until it does (run `pulumi up` on the stack)"
            )
        rows = self.rows.row_count(table)
        exists = "not created yet (Google creates it)" if rows is None else f"{rows} rows"
        if not agent_email:
            return f"{uri}: {exists}; the agent is unknown here (give --stack or --outputs)"
        granted = sorted(
            str(entry.get("role"))
            for entry in access
            if str(entry.get("role")) in WRITER_ROLES
            and agent_email.lower()
            in {
                str(entry.get("userByEmail", "")).lower(),
                str(entry.get("iamMember", "")).lower().removeprefix("serviceaccount:"),
            }
        )
        if not granted:
            raise StepFailedError(
                f"the store streams to {uri}, but {agent_email} has no writer role in the "
                f"dataset's access list (a project-level grant would not show here: "
                f"`dicom-bq audit` checks both): the stream's rows are not written"
            )
        return f"{uri}: {exists}, {agent_email} may write ({', '.join(granted)})"

    def _refuse_lasting_copies(
        self, target: VerifyTarget, store: dict[str, Any], options: VerifyOptions
    ) -> None:
        """Google: "Instance deletions are not applied to the destination table" of a stream
        (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-streaming), and each
        topic's subscribers get the instance: in-place seeding leaves copies behind for good."""
        lasting = [*stream_tables(store), *notification_topics(store)]
        if not lasting or options.accept_stream_rows:
            return
        with self.step("in-place"):
            raise StepFailedError(
                f"--in-place would store a synthetic instance in {target.store.name}, which "
                f"streams or notifies to {', '.join(lasting)}: its row stays in those tables for "
                "good (Google does not apply deletions to stream tables) and subscribers receive "
                "it. Verify with a temporary store (drop --in-place), or add "
                "--accept-synthetic-in-streams to accept that",
                exit_code=EXIT_BAD_INPUT,
            )

    def _create_temporary_store(self, target: VerifyTarget) -> StoreName:
        with self.step("temp-store") as detail:
            store_id = f"{TEMPORARY_STORE_PREFIX}{uuid.uuid4().hex[:12]}"
            temporary = StoreName(
                target.store.project, target.store.location, target.store.dataset, store_id
            )
            try:
                self.api.create_store(
                    target.store.dataset_name, store_id, {"dicom-bq": "verification"}
                )
            except ApiCallError as error:
                # A retried create whose first answer was lost finds its own store: the ID is new.
                if error.status != 409:
                    raise StepFailedError(
                        f"cannot create temporary store {temporary.name}: {error.status} "
                        f"{error.reason} {error.message} (it needs healthcare.dicomStores.create; "
                        "or verify the real store with --in-place)"
                    ) from None
            detail.append(f"created {temporary.name} (same dataset, agent, location and CMEK)")
            return temporary

    def _seed(self, store: StoreName) -> SyntheticInstance:
        with self.step("seed") as detail:
            instance = synthetic_instance()
            try:
                self.api.store_instance(store.name, instance.data)
            except ApiCallError as error:
                raise StepFailedError(
                    f"STOW-RS of the synthetic instance was refused: {error.status} "
                    f"{error.reason} {error.message}"
                ) from None
            detail.append(
                f"stored synthetic instance {instance.sop_uid} ({len(instance.data)} bytes) in "
                f"{store.store}"
            )
            return instance

    def _write_filter(self, target: VerifyTarget, instance: SyntheticInstance) -> GcsUri | None:
        if not target.filter_bucket or self.filters is None:
            return None
        with self.step("filter") as detail:
            uri = GcsUri(target.filter_bucket, f"{FILTER_PREFIX}/{instance.sop_uid}.txt")
            self.filters.upload_text(uri, instance.filter_line + "\n")
            detail.append(f"wrote {uri.uri}")
            return uri

    def _export(
        self,
        store: StoreName,
        target: VerifyTarget,
        filter_uri: GcsUri | None,
        timeout: float | None,
    ) -> OperationState:
        plan = ExportPlan(
            store=store,
            table=target.table,
            write_disposition=WriteDisposition.WRITE_TRUNCATE,
            filter=filter_uri,
        )
        with self.step("export") as detail:
            state = self.exporter.run(
                plan,
                self.follower,
                timeout,
                on_start=self.on_start,
                on_update=self.on_update,
                on_wait=self.on_wait,
            )
            self.report.operation = state
            if not state.done:
                raise StepFailedError(
                    f"operation {state.name} still running after the timeout; resume with "
                    f"`dicom-bq operations wait {state.name}`",
                    exit_code=state.exit_code,
                )
            if state.exit_code != EXIT_OK:
                raise StepFailedError(
                    f"operation {state.name} {state.state}: "
                    + (state.error_message or f"{state.failure} instances failed")
                    + (f" (logs: {state.logs_url})" if state.logs_url else "")
                )
            detail.append(
                f"{state.name}: {state.success} exported, {state.failure} failed into "
                f"{target.table.uri}" + ("" if filter_uri else " (whole store: no filter bucket)")
            )
            return state

    def _find_row(self, target: VerifyTarget, instance: SyntheticInstance) -> None:
        with self.step("query") as detail:
            rows = self.rows.instance_rows(target.table, instance.sop_uid)
            if not rows:
                raise StepFailedError(
                    f"no row for SOPInstanceUID {instance.sop_uid} in {target.table.uri}"
                )
            expected = {
                "StudyInstanceUID": instance.study_uid,
                "SeriesInstanceUID": instance.series_uid,
                "SOPInstanceUID": instance.sop_uid,
                "PatientID": instance.patient_id,
            }
            row = rows[0]
            wrong = [
                f"{k}={row.get(k)!r}, sent {v!r}" for k, v in expected.items() if row.get(k) != v
            ]
            if wrong:
                raise StepFailedError(
                    "the exported row does not match what was sent: " + "; ".join(wrong)
                )
            detail.append(
                f"found the row of {instance.sop_uid}: study, series, instance, patient IDs match"
            )

    def _compare_counts(
        self, target: VerifyTarget, state: OperationState, metrics: dict[str, Any]
    ) -> None:
        with self.step("count") as detail:
            rows = self.rows.row_count(target.table) or 0
            instances = int(metrics.get("instanceCount") or 0)
            if rows != state.success or rows != instances:
                raise StepFailedError(
                    f"{target.table.uri} has {rows} rows, the export reported {state.success} "
                    f"successes, the store held {instances} instances before the export"
                )
            detail.append(f"{rows} rows = {state.success} exported = {instances} instances")

    def _clean_up(
        self,
        store: StoreName,
        instance: SyntheticInstance | None,
        filter_uri: GcsUri | None,
        temporary: StoreName | None,
    ) -> None:
        try:
            with self.step("cleanup") as detail:
                problems = []
                if temporary is not None:
                    try:
                        self.api.delete_store(temporary.name)
                        detail.append(f"deleted temporary store {temporary.name}")
                    except ApiCallError as error:
                        problems.append(
                            f"could not delete temporary store {temporary.name} ({error.status} "
                            f"{error.message}): delete it with `gcloud healthcare dicom-stores "
                            f"delete {temporary.store} --dataset={temporary.dataset} "
                            f"--location={temporary.location} --project={temporary.project}`"
                        )
                elif instance:
                    try:
                        self.api.delete_instance(
                            store.name, instance.study_uid, instance.series_uid, instance.sop_uid
                        )
                        detail.append(f"deleted synthetic instance {instance.sop_uid}")
                    except ApiCallError as error:
                        problems.append(
                            f"could not delete synthetic instance {instance.sop_uid}: "
                            f"{error.status} {error.message}; delete it by hand"
                        )
                if filter_uri and self.filters is not None:
                    self.filters.delete(filter_uri)
                    detail.append(f"deleted {filter_uri.uri}")
                if problems:
                    raise StepFailedError("; ".join([*detail, *problems]))
        except (StepFailedError, DicomBqError):
            pass


class VerifyObserver(ExportObserver, Protocol):
    """What the person running verify is told: each step as it ends, and the export's progress."""

    def step(self, result: StepResult) -> None: ...


def verify_targets(
    *,
    stack: str | None,
    outputs: Path | None,
    store: str | None,
    table: str | None,
    filter_bucket: str | None,
    project_dir: Path | None,
    store_id: str | None = None,
) -> list[VerifyTarget]:
    """What to verify: a stack's stores (its outputs through the Pulumi CLI, or a saved copy),
    every one or the one `store_id` names; or a store named directly."""
    from dicom_bq.stack import outputs as stack_outputs

    sources = [stack is not None, outputs is not None, store is not None]
    if sum(sources) != 1:
        raise DicomBqError(
            "say where to verify with exactly one of --stack NAME, --outputs FILE or "
            "--store NAME (with --table)"
        )
    if store is not None:
        if store_id is not None:
            raise DicomBqError(
                "--store-id picks one of a stack's stores: use it with --stack or --outputs; "
                "--store already names the store"
            )
        if table is None:
            raise DicomBqError(
                "--store needs --table bq://PROJECT.DATASET.TABLE for the verification export"
            )
        from dicom_bq.infra import identifiers

        problem = identifiers.check_bucket(filter_bucket) if filter_bucket else None
        if problem:
            raise DicomBqError(f"--filter-bucket {filter_bucket!r} is not valid: {problem}")
        return [VerifyTarget(StoreName.parse(store), TableUri.parse(table), filter_bucket)]
    from dicom_bq.flows.targets import stack_outputs_document

    document = stack_outputs_document(stack=stack, outputs=outputs, project_dir=project_dir)
    return stack_outputs.targets_from_outputs(document, table, store_id)


def check_verify_options(options: VerifyOptions) -> None:
    if options.accept_stream_rows and not options.in_place:
        raise DicomBqError(
            "--accept-synthetic-in-streams goes with --in-place: without it, verify seeds a "
            "temporary store and nothing is left in the real store's streams"
        )
    if not options.seed and options.in_place:
        raise DicomBqError("--no-seed stores nothing: drop --in-place")


def verify_path(
    *,
    stack: str | None,
    outputs: Path | None,
    store: str | None,
    table: str | None,
    filter_bucket: str | None,
    project_dir: Path | None,
    options: VerifyOptions,
    access: GoogleAccess,
    api_version: str,
    permission_window: float,
    truncate_confirmed: bool,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
    store_id: str | None = None,
) -> VerifyReport:
    """`dicom-bq verify`: the targets from the stack, its saved outputs or a named store, then
    the proof, store after store."""
    check_verify_options(options)
    targets = verify_targets(
        stack=stack,
        outputs=outputs,
        store=store,
        table=table,
        filter_bucket=filter_bucket,
        project_dir=project_dir,
        store_id=store_id,
    )
    return verify_each(
        targets=targets,
        options=options,
        access=access,
        api_version=api_version,
        permission_window=permission_window,
        truncate_confirmed=truncate_confirmed,
        confirm_truncate=confirm_truncate,
        observer=observer,
    )


def verify_each(
    *,
    targets: list[VerifyTarget],
    options: VerifyOptions,
    access: GoogleAccess,
    api_version: str,
    permission_window: float,
    truncate_confirmed: bool,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
) -> VerifyReport:
    """The proof for each store in turn (`verify` and `up` alike), as one report: seed, export
    (the export flow `dicom-bq export` runs: Exporter.run), find the row, clean up. Each
    target's universe is the one its Google calls go to."""
    from dicom_bq.clients.bigquery import BigQueryTables
    from dicom_bq.clients.storage import StorageObjects
    from dicom_bq.flows.export import check_truncate
    from dicom_bq.flows.operations import healthcare_api

    def proof(target: VerifyTarget) -> VerifyReport:
        connection = access.connection(default_universe=target.universe_domain)
        api = healthcare_api(connection=connection, api_version=api_version)
        filters = StorageObjects(connection, target.store.project) if target.filter_bucket else None
        rows = BigQueryTables(connection, target.table.project)
        verifier = Verifier(
            api=api,
            rows=rows,
            filters=filters,
            exporter=Exporter(
                api, permission_window=permission_window, agent_email=target.agent_email
            ),
            follower=Follower(api),
            on_step=observer.step,
            on_start=observer.started,
            on_update=observer.progress,
            on_wait=observer.waiting,
            confirm_truncate=lambda table: check_truncate(
                count_rows=rows.row_count,
                table=table,
                confirmed=truncate_confirmed,
                confirm=confirm_truncate,
            ),
        )
        return verifier.run(target, options)

    reports = [proof(target) for target in targets]
    if len(reports) == 1:
        return reports[0]
    return merged_report(targets, reports)


def merged_report(targets: list[VerifyTarget], reports: list[VerifyReport]) -> VerifyReport:
    """One report for several stores: each step named after its store (clinical:export), the
    first failure's exit code."""
    return VerifyReport(
        steps=[
            StepResult(f"{target.store.store}:{step.name}", step.ok, step.seconds, step.detail)
            for target, report in zip(targets, reports, strict=True)
            for step in report.steps
        ],
        operation=reports[-1].operation,
        exit_code=next((report.exit_code for report in reports if not report.ok), EXIT_OK),
    )
