"""A provisioned stack's outputs: from `pulumi stack output --json` or a saved copy."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_bq.errors import EXIT_FAILED, EXIT_TIMEOUT, DicomBqError
from dicom_bq.files import loads_json, read_bounded
from dicom_bq.refs import StoreName, TableUri
from dicom_bq.texts import excerpt, output_excerpt
from dicom_bq.vocabulary import identifiers
from dicom_bq.vocabulary.contract import OutputNames, StackOutputs


@dataclass(frozen=True)
class VerifyTarget:
    store: StoreName
    table: TableUri
    filter_bucket: str | None = None
    agent_email: str | None = None
    universe_domain: str = "googleapis.com"


PULUMI_INSTALL = "https://www.pulumi.com/docs/install/"


def pulumi_executable(alternative: str | None = None) -> str:
    """The Pulumi CLI on PATH, or DicomBqError saying how to install it, and the command's
    own way around it when it has one."""
    found = shutil.which("pulumi")
    if not found:
        instead = (
            alternative
            or "or pass the outputs with --outputs FILE (saved from `pulumi stack output --json`)"
        )
        raise DicomBqError(
            f"the Pulumi CLI is not on PATH: install it ({PULUMI_INSTALL}), {instead}"
        )
    return found


# A stack's outputs are a few KiB; `pulumi stack export` (every resource's state) may be a few
# MiB. Larger answers, and larger --outputs files, are refused rather than read.
MAX_OUTPUTS_BYTES = 4 * 1024 * 1024
MAX_EXPORT_BYTES = 64 * 1024 * 1024
# How long a read-only `pulumi stack ...` may take: it reads the stack's state from its backend
# (a file, or Pulumi Cloud over the network) and answers; it never deploys anything.
PULUMI_READ_TIMEOUT = 120.0


@dataclass(frozen=True)
class PulumiAnswer:
    returncode: int
    stdout: bytes
    stderr: bytes

    def said(self) -> str:
        """What the command printed, for a message: the end of its stderr (else stdout), at
        most 40 lines and 4 KiB, without terminal escape sequences (texts.output_excerpt)."""
        return output_excerpt(self.stderr.strip() or self.stdout.strip()) or "(no output)"


def run_pulumi_read(
    arguments: list[str],
    project_dir: Path,
    *,
    executable: str,
    limit: int,
    timeout: float | None = None,
) -> PulumiAnswer:
    """A read-only Pulumi CLI command, with a deadline and bounded output: its stdout and
    stderr go to temporary files (not memory), of which at most `limit` bytes are read back; a
    command still running after `timeout` seconds is killed and DicomBqError (exit 3) names it.
    """
    import tempfile

    command = [executable, *arguments]
    shown = " ".join(["pulumi", *arguments])
    deadline = PULUMI_READ_TIMEOUT if timeout is None else timeout
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            returncode = subprocess.run(
                command,
                cwd=project_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                check=False,
                timeout=deadline,
            ).returncode
        except subprocess.TimeoutExpired:
            raise DicomBqError(
                f"`{shown}` did not answer in {deadline:g}s and was stopped: check that the "
                "Pulumi backend is reachable (`pulumi whoami`), then try again",
                EXIT_TIMEOUT,
            ) from None
        streams = []
        for stream in (out, err):
            size = stream.seek(0, 2)
            stream.seek(max(size - limit, 0) if stream is err else 0)
            data = stream.read(limit + 1)
            if stream is out and size > limit:
                raise DicomBqError(
                    f"`{shown}` answered {size} bytes, more than the {limit} read here: is "
                    "this the right stack?",
                    EXIT_FAILED,
                )
            streams.append(data)
    return PulumiAnswer(returncode, streams[0], streams[1])


def _checked_stack(stack: str) -> str:
    problem = identifiers.check_stack_name(stack)
    if problem:
        raise DicomBqError(f"stack name {excerpt(stack)} is not valid: {problem}")
    return stack


def read_stack_outputs(stack: str, project_dir: Path) -> dict[str, Any]:
    _checked_stack(stack)
    arguments = ["stack", "output", "--json", "--stack", stack]
    answer = run_pulumi_read(
        arguments, project_dir, executable=pulumi_executable(), limit=MAX_OUTPUTS_BYTES
    )
    if answer.returncode != 0:
        raise DicomBqError(
            f"`pulumi {' '.join(arguments)}` failed ({answer.returncode}); check the stack name "
            f"with `pulumi stack ls`. Pulumi said:\n{answer.said()}"
        )
    try:
        text = answer.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise DicomBqError(f"`pulumi {' '.join(arguments)}` did not answer UTF-8 text") from None
    return _parse(text, f"the outputs of stack {stack}")


def read_outputs_file(path: Path) -> dict[str, Any]:
    data = read_bounded(path, limit=MAX_OUTPUTS_BYTES, what=f"--outputs {path}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DicomBqError(
            f"--outputs {path} is not UTF-8 text: save it with `pulumi stack output --json > FILE`"
        ) from None
    return _parse(text, f"--outputs {path}")


def _parse(text: str, what: str) -> dict[str, Any]:
    try:
        document = loads_json(text, what=what)
    except json.JSONDecodeError as error:
        raise DicomBqError(
            f"{what} is not JSON ({error.msg} at line {error.lineno}): save it with "
            "`pulumi stack output --json > outputs.json`"
        ) from None
    if not isinstance(document, dict):
        raise DicomBqError(f"{what} must be a JSON object of output names and values")
    return document


def targets_from_outputs(
    outputs: dict[str, Any], table: str | None = None, store_id: str | None = None
) -> list[VerifyTarget]:
    """What `verify` checks in a stack: the store `store_id`, or every store of the stack."""
    parsed = StackOutputs.parse(outputs)
    parsed.require(OutputNames.STORE, OutputNames.VERIFICATION_TABLE)
    assert parsed.verification_table_uri
    bucket = parsed.filter_bucket
    if bucket is not None and identifiers.check_bucket(bucket):
        raise DicomBqError(
            f"the stack output {OutputNames.FILTER_BUCKET} {excerpt(bucket)} is not a bucket name"
        )
    verification_table = TableUri.parse(table or parsed.verification_table_uri)
    return [
        VerifyTarget(
            store=StoreName.parse(store.name),
            table=verification_table,
            filter_bucket=bucket,
            agent_email=parsed.agent_email,
            universe_domain=parsed.universe_domain,
        )
        for store in parsed.selected_stores(store_id)
    ]


@dataclass(frozen=True)
class UpOptions:
    """Pulumi's common `up` flags, passed through as the Pulumi CLI documents them
    (https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/)."""

    yes: bool = False
    policy_packs: list[str] = field(default_factory=list)
    # One JSON file per policy pack, in the same order, or none at all: `pulumi up` refuses any
    # other count (pulumi/pulumi pkg/cmd/pulumi, validatePolicyPackConfig).
    policy_pack_configs: list[str] = field(default_factory=list)
    refresh: bool = False
    diff: bool = False
    targets: list[str] = field(default_factory=list)
    message: str | None = None

    def flags(self) -> list[str]:
        flags = ["--yes"] if self.yes else []
        for pack in self.policy_packs:
            flags += ["--policy-pack", pack]
        for config in self.policy_pack_configs:
            flags += ["--policy-pack-config", config]
        flags += ["--refresh"] if self.refresh else []
        flags += ["--diff"] if self.diff else []
        for urn in self.targets:
            flags += ["--target", urn]
        if self.message is not None:
            flags += ["--message", self.message]
        return flags


def read_stack_resource_ids(stack: str, project_dir: Path) -> tuple[set[str] | None, str]:
    """The IDs of what the stack already manages (`pulumi stack export`), or None with why.

    Never raises: preflight works without a CLI, only less sure about what is the stack's own.
    """
    if identifiers.check_stack_name(stack):
        return None, f"stack name {excerpt(stack)} is not valid"
    found = shutil.which("pulumi")
    if not found:
        return None, "the Pulumi CLI is not on PATH"
    try:
        answer = run_pulumi_read(
            ["stack", "export", "--stack", stack],
            project_dir,
            executable=found,
            limit=MAX_EXPORT_BYTES,
        )
    except DicomBqError as error:  # too slow, or too large an answer
        return None, error.message
    if answer.returncode != 0:
        said = answer.said().splitlines()[-1:] or ["failed"]
        if "no stack named" in said[0]:
            return set(), f"stack {stack} does not exist yet"
        return None, f"`pulumi stack export` failed: {said[0][:200]}"
    try:
        deployment = loads_json(answer.stdout.decode("utf-8"), what="`pulumi stack export`")
        deployment = deployment.get("deployment") or {}
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError, DicomBqError):
        return None, "`pulumi stack export` did not answer JSON"
    resources = deployment.get("resources") or []
    return {str(r.get("id")) for r in resources if isinstance(r, dict) and r.get("id")}, ""
