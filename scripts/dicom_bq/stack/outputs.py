"""A provisioned stack's outputs: from `pulumi stack output --json` or a saved copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_bq.errors import DicomBqError
from dicom_bq.infra import identifiers
from dicom_bq.refs import StoreName, TableUri
from dicom_bq.stack.contract import OutputNames, StackOutputs
from dicom_bq.texts import excerpt


@dataclass(frozen=True)
class VerifyTarget:
    store: StoreName
    table: TableUri
    filter_bucket: str | None = None
    agent_email: str | None = None
    universe_domain: str = "googleapis.com"


def pulumi_executable() -> str:
    found = shutil.which("pulumi")
    if not found:
        raise DicomBqError(
            "the Pulumi CLI is not on PATH: install it (https://www.pulumi.com/docs/install/), "
            "or pass the outputs with --outputs FILE (saved from `pulumi stack output --json`)"
        )
    return found


def read_stack_outputs(stack: str, project_dir: Path) -> dict[str, Any]:
    command = [pulumi_executable(), "stack", "output", "--json", "--stack", stack]
    result = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DicomBqError(
            f"`pulumi stack output --json --stack {stack}` failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}; check the stack name with "
            "`pulumi stack ls`"
        )
    return _parse(result.stdout, f"the outputs of stack {stack}")


def read_outputs_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DicomBqError(f"--outputs {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise DicomBqError(
            f"--outputs {path} is not UTF-8 text: save it with `pulumi stack output --json > FILE`"
        ) from None
    return _parse(text, f"--outputs {path}")


def _parse(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
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


def pulumi_up(
    stack: str,
    project_dir: Path,
    options: UpOptions,
    output_to_stderr: bool = False,
    impersonate: str | None = None,
) -> int:
    """`pulumi up`, its output streamed as it comes; returns its exit code.

    With `output_to_stderr`, Pulumi's output goes to stderr so stdout carries only JSON.
    `impersonate` reaches the gcp provider as GOOGLE_IMPERSONATE_SERVICE_ACCOUNT, which it
    reads when the stack sets no gcp:impersonateServiceAccount (terraform-provider-google
    google/transport/config.go HandleSDKDefaults, bridged by pulumi-gcp); an environment
    variable, not `--config`, so the stack file is left as it is.
    """
    command = [pulumi_executable(), "up", "--stack", stack, *options.flags()]
    environment = (
        {**os.environ, "GOOGLE_IMPERSONATE_SERVICE_ACCOUNT": impersonate} if impersonate else None
    )
    if not output_to_stderr:
        return subprocess.run(command, cwd=project_dir, check=False, env=environment).returncode
    with subprocess.Popen(
        command, cwd=project_dir, stdout=subprocess.PIPE, text=True, bufsize=1, env=environment
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
    return process.returncode


def read_stack_resource_ids(stack: str, project_dir: Path) -> tuple[set[str] | None, str]:
    """The IDs of what the stack already manages (`pulumi stack export`), or None with why.

    Never raises: preflight works without a CLI, only less sure about what is the stack's own.
    """
    found = shutil.which("pulumi")
    if not found:
        return None, "the Pulumi CLI is not on PATH"
    command = [found, "stack", "export", "--stack", stack]
    result = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["failed"]
        if "no stack named" in said[0]:
            return set(), f"stack {stack} does not exist yet"
        return None, f"`pulumi stack export` failed: {said[0][:200]}"
    try:
        deployment = json.loads(result.stdout).get("deployment") or {}
    except (json.JSONDecodeError, AttributeError):
        return None, "`pulumi stack export` did not answer JSON"
    resources = deployment.get("resources") or []
    return {str(r.get("id")) for r in resources if isinstance(r, dict) and r.get("id")}, ""
