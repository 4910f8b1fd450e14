"""`dicom-bq verify`: prove the export path works, step by step, and clean up after itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicom_bq.errors import EXIT_FAILED, EXIT_OK, DicomBqError
from dicom_bq.export import Exporter, ExportPlan
from dicom_bq.healthcare_api import ApiCallError, HealthcareApi
from dicom_bq.operations import Follower, OperationState
from dicom_bq.refs import GcsUri, WriteDisposition
from dicom_bq.retry import Clock, SystemClock
from dicom_bq.seed import SyntheticInstance, synthetic_instance
from dicom_bq.stack_outputs import VerifyTarget

FILTER_PREFIX = "dicom-bq/verify"


class RowSource(Protocol):
    def row_count(self, table: Any) -> int | None: ...

    def instance_rows(self, table: Any, sop_instance_uid: str) -> list[dict[str, Any]]: ...


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

    def run(
        self,
        target: VerifyTarget,
        seed: bool = True,
        keep: bool = False,
        timeout: float | None = None,
    ) -> VerifyReport:
        instance: SyntheticInstance | None = None
        filter_uri: GcsUri | None = None
        try:
            metrics = self._check_store(target)
            if seed:
                instance = self._seed(target)
                filter_uri = self._write_filter(target, instance)
            state = self._export(target, filter_uri, timeout)
            if instance:
                self._find_row(target, instance)
            else:
                self._compare_counts(target, state, metrics)
        except (StepFailedError, DicomBqError):
            pass
        finally:
            if (instance or filter_uri) and not keep:
                self._clean_up(target, instance, filter_uri)
        return self.report

    def _check_store(self, target: VerifyTarget) -> dict[str, Any]:
        with self.step("store") as detail:
            try:
                self.api.get_store(target.store.name)
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
            return metrics

    def _seed(self, target: VerifyTarget) -> SyntheticInstance:
        with self.step("seed") as detail:
            instance = synthetic_instance()
            try:
                self.api.store_instance(target.store.name, instance.data)
            except ApiCallError as error:
                raise StepFailedError(
                    f"STOW-RS of the synthetic instance was refused: {error.status} "
                    f"{error.reason} {error.message}"
                ) from None
            detail.append(
                f"stored synthetic instance {instance.sop_uid} ({len(instance.data)} bytes)"
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
        self, target: VerifyTarget, filter_uri: GcsUri | None, timeout: float | None
    ) -> OperationState:
        plan = ExportPlan(
            store=target.store,
            table=target.table,
            write_disposition=WriteDisposition.WRITE_TRUNCATE,
            filter=filter_uri,
        )
        with self.step("export") as detail:
            state = self.exporter.run(plan, self.follower, timeout, on_update=self.on_update)
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
        self, target: VerifyTarget, instance: SyntheticInstance | None, filter_uri: GcsUri | None
    ) -> None:
        try:
            with self.step("cleanup") as detail:
                if instance:
                    try:
                        self.api.delete_instance(
                            target.store.name,
                            instance.study_uid,
                            instance.series_uid,
                            instance.sop_uid,
                        )
                    except ApiCallError as error:
                        raise StepFailedError(
                            f"could not delete synthetic instance {instance.sop_uid}: "
                            f"{error.status} {error.message}; delete it by hand"
                        ) from None
                    detail.append(f"deleted synthetic instance {instance.sop_uid}")
                if filter_uri and self.filters is not None:
                    self.filters.delete(filter_uri)
                    detail.append(f"deleted {filter_uri.uri}")
        except (StepFailedError, DicomBqError):
            pass
