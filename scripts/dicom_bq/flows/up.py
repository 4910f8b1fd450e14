"""`dicom-bq up`: the stack planned offline, preflight, `pulumi up` (run again while what it
failed on is propagation that Google says passes in time: flows/propagation.py), then verify on
the fresh outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_bq.clients.retry import Backoff, Clock, SystemClock
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.export import ConfirmTruncate
from dicom_bq.flows.propagation import (
    MESSAGE_LIMIT,
    Diagnostic,
    Propagation,
    StackEvidence,
    clean,
    read_event_log,
    triage,
)
from dicom_bq.flows.targets import Target
from dicom_bq.flows.verify import VerifyObserver, VerifyOptions, VerifyReport, verify_each
from dicom_bq.texts import SUBPROCESS_BYTES, output_excerpt

if TYPE_CHECKING:
    from dicom_bq.stack.outputs import UpOptions
    from dicom_bq.stack.plan import Plan

# Between `pulumi up` runs while something propagates: 30 s, 60 s, then every 2 minutes, the last
# wait cut to end on the window (a run itself takes a while; Google's typical IAM delay is 2
# minutes). No jitter: one person's deployment, nothing to spread.
PROPAGATION_BACKOFF = Backoff(initial=30.0, factor=2.0, cap=120.0, jitter=0.0)
# What of pulumi's stderr is kept for a message when the engine recorded no error (pulumi stopped
# before it ran: a missing stack, bad config, a declined confirmation).
STDERR_LINES = 20
SHOWN_ERRORS = 3


@dataclass(frozen=True)
class PulumiUpFlags:
    """What `dicom-bq up` passes to `pulumi up` (https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/);
    no policy pack named means the project's own policy/ folder."""

    yes: bool = False
    policy_packs: list[Path] = field(default_factory=list)
    no_policy_pack: bool = False
    refresh: bool = False
    diff: bool = False
    targets: list[str] = field(default_factory=list)
    message: str | None = None


@dataclass(frozen=True)
class Wait:
    """One wait between two `pulumi up` runs, and what it was for."""

    after_attempt: int
    seconds: float
    propagating: list[Propagation]

    def as_dict(self) -> dict[str, Any]:
        return {
            "after_attempt": self.after_attempt,
            "seconds": round(self.seconds, 3),
            "for": [
                {
                    "kind": p.window.name,
                    "resource": p.resource,
                    "waiting_for": p.waiting_for,
                    "window_seconds": p.window.seconds,
                    "google": p.google,
                }
                for p in self.propagating
            ],
        }


@dataclass
class Deployment:
    """How `pulumi up` went: how many runs it took, and the waits between them."""

    attempts: int = 0
    waits: list[Wait] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "waited_seconds": round(sum(w.seconds for w in self.waits), 3),
            "waits": [w.as_dict() for w in self.waits],
        }


@dataclass(frozen=True)
class UpReport:
    deployment: Deployment
    verification: VerifyReport

    @property
    def ok(self) -> bool:
        return self.verification.ok

    @property
    def exit_code(self) -> int:
        return self.verification.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {**self.verification.as_dict(), "deployment": self.deployment.as_dict()}


def deploy_and_verify(
    *,
    target: Target,
    preflight: bool,
    flags: PulumiUpFlags,
    options: VerifyOptions,
    permission_window: float,
    pulumi_output_to_stderr: bool,
    access: GoogleAccess,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
) -> UpReport:
    from dicom_bq.stack import outputs as stack_outputs
    from dicom_bq.stack.plan import plan_stack

    stack = target.named_stack()
    folder = target.folder()
    # A bad stack fails here, offline, before pulumi touches anything.
    config = target.config()
    deployer = config.values.get("gcp:impersonateServiceAccount")
    if access.impersonate and deployer and deployer != access.impersonate:
        # The provider's config wins over GOOGLE_IMPERSONATE_SERVICE_ACCOUNT: pulumi would
        # deploy as one account while preflight and verify run as another.
        raise DicomBqError(
            f"the stack sets gcp:impersonateServiceAccount {deployer}, which pulumi up "
            f"would use instead of --impersonate-service-account {access.impersonate}: drop one"
        )
    plan = plan_stack(config)
    # Bad settings were said above, offline; without the CLI nothing more is read or sent
    # (preflight would call Google for a deployment that cannot happen).
    stack_outputs.pulumi_executable(
        alternative="then run `dicom-bq up` again; nothing was sent to Google"
    )
    if preflight:
        from dicom_bq.flows.preflight import preflight_plan, report_lines

        # The plan made above: the stack's config (and its ESC environments) is read once.
        report = preflight_plan(plan=plan, project_dir=folder, impersonate=access.impersonate)
        for line in report_lines(report):
            observer.notice(line)
        if not report.ok:
            raise DicomBqError(
                "preflight found what would make `pulumi up` fail (above): nothing was "
                "deployed; fix it, or pass --skip-preflight",
                exit_code=EXIT_FAILED,
            )
    if flags.no_policy_pack and flags.policy_packs:
        raise DicomBqError("--no-policy-pack and --policy-pack contradict each other")
    own_pack = folder / "policy"
    packs = [] if flags.no_policy_pack else flags.policy_packs or [own_pack]
    with tempfile.TemporaryDirectory(prefix="dicom-bq-up-") as scratch:
        up_options = stack_outputs.UpOptions(
            yes=flags.yes,
            policy_packs=[str(pack) for pack in packs],
            policy_pack_configs=_policy_pack_configs(
                packs=packs, own_pack=own_pack, plan=plan, folder=Path(scratch)
            ),
            refresh=flags.refresh,
            diff=flags.diff,
            targets=list(flags.targets),
            message=flags.message,
        )
        deployment = deploy_until_propagated(
            run=lambda attempt: run_pulumi_up(
                stack,
                folder,
                up_options,
                event_log=Path(scratch) / f"events-{attempt}.jsonl",
                output_to_stderr=pulumi_output_to_stderr,
                impersonate=access.impersonate,
            ),
            evidence=StackEvidence.from_plan(plan),
            observer=observer,
            stack=stack,
        )
    # Every store the stack now holds, as `verify --stack` checks them.
    targets = stack_outputs.targets_from_outputs(target.outputs_document())
    verification = verify_each(
        targets=targets,
        options=options,
        access=access,
        api_version="v1",
        permission_window=permission_window,
        # The stack's own verification table: Verifier truncates it without a question.
        truncate_confirmed=False,
        confirm_truncate=confirm_truncate,
        observer=observer,
    )
    return UpReport(deployment, verification)


@dataclass(frozen=True)
class PulumiRun:
    """One `pulumi up`: its exit code, the errors its engine recorded, the end of its stderr."""

    exit_code: int
    errors: list[Diagnostic]
    stderr: str


def run_pulumi_up(
    stack: str,
    folder: Path,
    options: UpOptions,
    *,
    event_log: Path,
    output_to_stderr: bool,
    impersonate: str | None,
) -> PulumiRun:
    """`pulumi up`, its output streamed as it comes, the engine's events recorded in `event_log`.

    stdout is left to the terminal (pulumi is interactive only when stdin and stdout are
    terminals: sdk/go/common/util/cmdutil/console.go, InteractiveTerminal), or, with
    `output_to_stderr`, copied to stderr so that stdout carries only JSON. stderr is copied as it
    comes and its end kept. `--event-log` exists when PULUMI_DEBUG_COMMANDS is set, as the
    Automation API sets it (pkg/cmd/pulumi/operations/up.go). `impersonate` reaches the gcp
    provider as GOOGLE_IMPERSONATE_SERVICE_ACCOUNT, which it reads when the stack sets no
    gcp:impersonateServiceAccount (terraform-provider-google google/transport/config.go
    HandleSDKDefaults, bridged by pulumi-gcp); an environment variable, not `--config`, so the
    stack file is left as it is.

    Ctrl-C reaches pulumi too (same process group), which cancels gracefully: it is waited for,
    so that the stack is not left with operations pending; a second Ctrl-C stops it at once.
    """
    from dicom_bq.stack.outputs import pulumi_executable

    command = [
        pulumi_executable(),
        "up",
        "--stack",
        stack,
        *options.flags(),
        "--event-log",
        str(event_log),
    ]
    environment = {**os.environ, "PULUMI_DEBUG_COMMANDS": "true"}
    if impersonate:
        environment["GOOGLE_IMPERSONATE_SERVICE_ACCOUNT"] = impersonate
    tail: deque[str] = deque(maxlen=STDERR_LINES)
    with subprocess.Popen(
        command,
        cwd=folder,
        stdout=subprocess.PIPE if output_to_stderr else None,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=environment,
    ) as process:
        assert process.stderr is not None
        stderr = process.stderr

        def copy_stderr() -> None:
            # Read a line at most SUBPROCESS_BYTES at a time: a single line of megabytes is
            # copied on in pieces, and only the last pieces are kept.
            for piece in iter(lambda: stderr.readline(SUBPROCESS_BYTES), ""):
                sys.stderr.write(piece)
                sys.stderr.flush()
                tail.append(piece)

        copier = threading.Thread(target=copy_stderr, daemon=True)
        copier.start()
        try:
            if process.stdout is not None:
                for line in process.stdout:
                    sys.stderr.write(line)
                    sys.stderr.flush()
            process.wait()
        except KeyboardInterrupt:
            try:
                process.wait()
            except KeyboardInterrupt:
                process.kill()
            raise
        finally:
            copier.join(timeout=5)
    return PulumiRun(process.returncode, read_event_log(event_log), "".join(tail))


def deploy_until_propagated(
    *,
    run: Callable[[int], PulumiRun],
    evidence: StackEvidence,
    observer: VerifyObserver,
    stack: str = "STACK",
    clock: Clock | None = None,
) -> Deployment:
    """`run` (one `pulumi up`) until it succeeds; again after a wait while every error it reports
    is propagation (flows/propagation.py), each failing resource for at most its window from its
    first such failure; any other failure stops at once with pulumi's message."""
    clock = clock or SystemClock()
    delays = PROPAGATION_BACKOFF.delays()
    first_failed: dict[tuple[str, str], float] = {}
    deployment = Deployment()
    while True:
        deployment.attempts += 1
        result = run(deployment.attempts)
        if result.exit_code == 0:
            return deployment
        found = triage(result.errors, evidence)
        if found.others or not found.propagating:
            raise DicomBqError(_failed(result, found.others), exit_code=EXIT_FAILED)
        now = clock.monotonic()
        ends = {
            p.key: first_failed.setdefault(p.key, now) + p.window.seconds for p in found.propagating
        }
        late = [p for p in found.propagating if now >= ends[p.key]]
        if late:
            raise DicomBqError(
                _gave_up(late[0], now - first_failed[late[0].key], deployment.attempts, stack),
                exit_code=EXIT_FAILED,
            )
        delay = min(next(delays), min(ends.values()) - now)
        for propagation in found.propagating:
            left = ends[propagation.key] - now
            # Google's message is in pulumi's output just above (and in --json's report).
            observer.notice(
                f"`pulumi up` run {deployment.attempts}: {clean(propagation.resource, 80)} was "
                f"refused; waiting for {propagation.waiting_for}"
            )
            observer.notice(
                f"  {propagation.window.says} ({propagation.window.source}): "
                f"{left:.0f}s left of {propagation.window.seconds}s from its first failure"
            )
        observer.waiting(f"waiting for {_what(found.propagating)} to propagate", delay)
        deployment.waits.append(Wait(deployment.attempts, delay, found.propagating))
        clock.sleep(delay)


def _what(propagating: list[Propagation]) -> str:
    kinds = sorted({p.window.name.split()[0] for p in propagating})
    return " and ".join(kinds)


def _failed(result: PulumiRun, others: list[Diagnostic]) -> str:
    head = f"`pulumi up` failed with exit code {result.exit_code}: nothing was verified"
    if others:
        shown = [f"{clean(d.resource, 80)}: {clean(d.message)}" for d in others[:SHOWN_ERRORS]]
        more = len(others) - len(shown)
        return "; ".join([f"{head}. pulumi said: {shown[0]}", *shown[1:]]) + (
            f" (and {more} more above)" if more > 0 else ""
        )
    # Its last words: where a program says why it stopped.
    # A bounded excerpt of its end (texts.output_excerpt), however long its lines were.
    excerpt = output_excerpt(result.stderr, lines=STDERR_LINES).splitlines()
    said = clean(" ".join(line for line in excerpt if line.strip()), 2 * SUBPROCESS_BYTES)
    if len(said) > MESSAGE_LIMIT:
        said = "..." + said[-(MESSAGE_LIMIT - 3) :].lstrip()
    return f"{head}. pulumi said: {said}" if said else head


def _gave_up(propagation: Propagation, waited: float, attempts: int, stack: str) -> str:
    return (
        f"`pulumi up` still fails on {clean(propagation.resource, 80)} {waited:.0f}s after it "
        f"first did ({attempts} runs), past the {propagation.window.seconds}s Google gives "
        f"{propagation.window.name} ({propagation.window.source}): it was waiting for "
        f"{propagation.waiting_for}. Google said: {propagation.google}. Check the stack's grants "
        f"with `dicom-bq audit --stack {stack}`, then run `dicom-bq up` again; nothing was verified"
    )


def own_pack_config(plan: Plan) -> dict[str, dict[str, object]]:
    """The project's pack's config for this stack: what `plan --check` and `review` hold the
    plan to, so that `pulumi up` enforces the same (protection, CMEK, locations, grants)."""
    from dicom_bq.infra.policy_config import pack_config
    from dicom_bq.stack.plan import UNRESOLVED_NUMBER

    settings = plan.settings
    assert settings is not None, "plan_stack records the settings it planned"
    number = plan.project_numbers.get(settings.source_project)
    known = number is not None and number != UNRESOLVED_NUMBER.format(
        project=settings.source_project
    )
    return pack_config(
        protected=settings.protected,
        allowed_bigquery_locations=settings.allowed_bigquery_locations,
        require_cmek=settings.require_cmek,
        source_project=settings.source_project,
        source_project_number=number if known else None,
        # The plan names the agent service-NUMBER@...: with the number unknown offline, its
        # grants would match no agent the deployment creates, so the pack uses its role
        # allow-list instead.
        grants=plan.grants if known else None,
    )


def _policy_pack_configs(
    *, packs: list[Path], own_pack: Path, plan: Plan, folder: Path
) -> list[str]:
    """A config file per pack when the project's pack is among them (its config comes from the
    plan; another pack gets {}, its own defaults); none otherwise."""
    if own_pack.resolve() not in {pack.resolve() for pack in packs}:
        return []
    files = []
    for index, pack in enumerate(packs):
        document = own_pack_config(plan) if pack.resolve() == own_pack.resolve() else {}
        path = folder / f"policy-pack-{index}.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        files.append(str(path))
    return files
