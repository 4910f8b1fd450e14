"""The stack's universe under the real engine: where `pulumi up` creates the resources.

The stand-in gcp provider records, in its simulated cloud (DICOM_BQ_STANDIN_CLOUD), the
universeDomain of the provider configuration that created each resource and answered each data
source (tests/engine/standins/common.py, CloudStore.record_universe), as pulumi-gcp sends every
request to https://SERVICE.<universe_domain>/.
- A stack in another universe: its resources and data sources go through the program's own gcp
  provider, registered with that universeDomain (and the stack's other gcp settings).
- A stack whose gcp:universeDomain disagrees with dicom-bq:universeDomain: refused by the program
  under the engine, both values named, before any resource.
- Stacks deployed by the program before it chose providers (`define_stack` without one: what
  infra/__main__.py ran until then): a googleapis.com stack previews with no change at all, and a
  stack that had set gcp:universeDomain by hand moves to the program's provider without any
  replacement.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicom_bq.vocabulary.contract import OutputNames
from tests.conftest import base_settings
from tests.engine.harness import ROOT, Workspace
from tests.engine.standins.common import read_universes

pytestmark = pytest.mark.engine

SOVEREIGN = "s3nsapis.fr"
PROVIDER = "dicom-bq-gcp"

# The program as it was before it chose the gcp provider (infra/__main__.py calling define_stack,
# whose component then had no provider option): what deployed stacks were made with.
BEFORE = """\
import pulumi

from dicom_bq.infra.components.export_path import DicomExportPath
from dicom_bq.infra.program import component_args, load_settings, stack_exports

for key, value in stack_exports(DicomExportPath("dicom-bq", component_args(load_settings()))).items():
    pulumi.export(key, value)
"""


def _workspace(tmp_path: Path) -> tuple[Workspace, Path]:
    cloud = tmp_path / "cloud.json"
    return Workspace.create(
        tmp_path / "project", extra_env={"DICOM_BQ_STANDIN_CLOUD": str(cloud)}
    ), cloud


def _stack(**config: Any) -> str:
    values: dict[str, Any] = {"gcp:project": "dicom-src-test"}
    values.update({f"dicom-bq:{k}": v for k, v in base_settings(iamPropagationWait="1s").items()})
    values.update(config)
    return yaml.safe_dump({"config": values})


def _program_before(workspace: Workspace) -> None:
    """The workspace runs the program as it was before (BEFORE), until _program_now."""
    link = workspace.path / "infra"
    link.unlink()
    link.mkdir()
    (link / "__main__.py").write_text(BEFORE)


def _program_now(workspace: Workspace) -> None:
    link = workspace.path / "infra"
    # The old program's directory, with the bytecode its run may have left (scripts/test keeps
    # bytecode writing on).
    shutil.rmtree(link)
    link.symlink_to(ROOT / "infra")


def _gcp_urn(urn: str) -> bool:
    """A gcp resource's URN: urn:pulumi:STACK::PROJECT::[PARENT_TYPE$]TYPE::NAME."""
    parts = urn.split("::")
    return urn.startswith("urn:") and parts[2].split("$")[-1].startswith("gcp:")


def _ops(preview: dict[str, Any]) -> dict[str, str]:
    """resource name -> the engine's step op, for the preview's steps ("(provider)" marks a
    provider resource)."""
    ops = {}
    for step in preview.get("steps", []):
        name = step["urn"].rsplit("::", 1)[-1]
        if "::pulumi:providers:" in step["urn"]:
            name += " (provider)"
        ops[name] = step["op"]
    return ops


def test_a_stack_in_another_universe_deploys_through_a_provider_for_it(tmp_path: Path) -> None:
    workspace, cloud = _workspace(tmp_path)
    workspace.write_stack("sov", _stack(**{"dicom-bq:universeDomain": SOVEREIGN}))
    workspace.init("sov")

    preview = workspace.preview("sov")
    (provider,) = [
        step["newState"]
        for step in preview["steps"]
        if step["newState"]["type"] == "pulumi:providers:gcp"
    ]
    assert provider["urn"].endswith(f"::{PROVIDER}")
    assert provider["inputs"]["universeDomain"] == SOVEREIGN
    # The stack's other gcp settings are handed on: an explicit provider reads no stack config.
    assert provider["inputs"]["project"] == "dicom-src-test"

    workspace.pulumi("up", "--yes", "--skip-preview", stack="sov")
    state = json.loads(workspace.pulumi("stack", "export", stack="sov").stdout)
    resources = state["deployment"]["resources"]
    providers = {r["urn"]: r for r in resources if r["type"] == "pulumi:providers:gcp"}
    assert [urn.rsplit("::", 1)[-1] for urn in providers] == [PROVIDER]
    gcp_resources = [r for r in resources if r["type"].startswith("gcp:")]
    assert gcp_resources
    for resource in gcp_resources:
        assert resource["provider"].rsplit("::", 1)[0] in providers, resource["urn"]

    universes = read_universes(cloud)
    created = {urn: u for urn, u in universes.items() if _gcp_urn(urn)}
    assert sorted(created) == sorted(r["urn"] for r in gcp_resources)
    assert set(created.values()) == {SOVEREIGN}
    invoked = {what: u for what, u in universes.items() if what.startswith("invoke:gcp:")}
    assert invoked  # the project number's check (Resource Manager) at least
    assert set(invoked.values()) == {SOVEREIGN}
    outputs = json.loads(workspace.pulumi("stack", "output", "--json", stack="sov").stdout)
    assert outputs[OutputNames.UNIVERSE] == SOVEREIGN
    # The agent Google names in that universe (its service-agent domain), not googleapis.com's.
    assert outputs[OutputNames.AGENT].endswith(
        "@gcp-sa-healthcare.s3ns-system.iam.gserviceaccount.com"
    )
    workspace.pulumi("preview", "--expect-no-changes", stack="sov")


def test_a_gcp_universe_that_disagrees_is_refused_before_any_resource(tmp_path: Path) -> None:
    workspace, cloud = _workspace(tmp_path)
    workspace.write_stack("mixed", _stack(**{"gcp:universeDomain": SOVEREIGN}))
    workspace.init("mixed")

    done = workspace.pulumi("up", "--yes", "--skip-preview", stack="mixed", check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "dicom-bq:universeDomain is 'googleapis.com' (the default)" in said
    assert f"gcp:universeDomain is '{SOVEREIGN}'" in said
    assert f"pulumi config set dicom-bq:universeDomain {SOVEREIGN} --stack mixed" in said
    assert "Traceback" not in said
    state = json.loads(workspace.pulumi("stack", "export", stack="mixed").stdout)
    assert [
        r["type"]
        for r in state["deployment"].get("resources") or []
        if not r["type"].startswith("pulumi:")
    ] == []
    assert read_universes(cloud) == {}


def test_a_googleapis_stack_deployed_before_previews_with_no_change(tmp_path: Path) -> None:
    workspace, _ = _workspace(tmp_path)
    workspace.copy_stack("dev")
    workspace.init("dev")
    _program_before(workspace)
    workspace.pulumi("up", "--yes", "--skip-preview", stack="dev")
    _program_now(workspace)
    preview = workspace.preview("dev")
    assert set(preview["changeSummary"]) == {"same"}, preview["changeSummary"]
    assert set(_ops(preview).values()) == {"same"}, _ops(preview)
    workspace.pulumi("preview", "--expect-no-changes", stack="dev")


def test_a_stack_that_set_gcp_universe_by_hand_moves_to_the_provider_without_replacing(
    tmp_path: Path,
) -> None:
    """Before, a sovereign stack reached its universe only through gcp:universeDomain set by
    hand (the default provider). Now the program's provider takes over: the engine compares the
    two providers' configuration (DiffConfig; pulumi-gcp marks no provider setting as forcing a
    replacement) and replaces nothing."""
    workspace, cloud = _workspace(tmp_path)
    hand_set = {"dicom-bq:universeDomain": SOVEREIGN, "gcp:universeDomain": SOVEREIGN}
    workspace.write_stack("sov", _stack(**hand_set, **{"dicom-bq:protected": True}))
    workspace.init("sov")
    _program_before(workspace)
    workspace.pulumi("up", "--yes", "--skip-preview", stack="sov")
    assert {u for urn, u in read_universes(cloud).items() if _gcp_urn(urn)} == {SOVEREIGN}
    _program_now(workspace)

    preview = workspace.preview("sov")
    # Measured: every resource "same", the program's provider the one step (the engine drops the
    # default provider no resource uses any more).
    assert set(preview["changeSummary"]) == {"same", "create"}, preview["changeSummary"]
    assert preview["changeSummary"]["create"] == 1
    assert {n: op for n, op in _ops(preview).items() if op != "same"} == {
        f"{PROVIDER} (provider)": "create"
    }
    workspace.pulumi("up", "--yes", "--skip-preview", stack="sov")
    state = json.loads(workspace.pulumi("stack", "export", stack="sov").stdout)
    for resource in state["deployment"]["resources"]:
        if resource["type"].startswith("gcp:"):
            assert resource["provider"].split("::")[-2] == PROVIDER, resource["urn"]
    workspace.pulumi("preview", "--expect-no-changes", stack="sov")
