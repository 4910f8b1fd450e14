"""What the installed Pulumi SDKs say about a resource type, read from their source.

The stand-ins must accept exactly the inputs the program can send and replace a resource where the
real provider would. The generated SDKs (pulumi_gcp, pulumiverse_time, produced by the Terraform
bridge's tfgen) carry that per resource: the `<Name>Args` class lists every input under its wire
name (`@pulumi.getter(name="datasetId")`), with `Optional[...]` on the optional ones, and the
`_<Name>State` class lists inputs and outputs. The docstrings copy the Terraform descriptions,
which say "Changing this forces a new resource to be created" on some ForceNew fields (not all:
Terraform documents ForceNew unevenly, so gcp.py adds the rest from the provider's own schema).

The source is parsed with `ast`, never imported: importing pulumi_gcp's modules registers resource
packages and takes seconds, and a provider process must start quickly.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

# tfgen copies the Terraform attribute description. "Changing this forces a new resource to be
# created" is the usual wording (e.g. pulumi_gcp/bigquery/dataset.py, dataset_id), variants exist
# ("forces a new service account to be created", pulumi_gcp/serviceaccount/account.py,
# account_id), and the DICOM store's name says "Changing this property may recreate the Dicom
# store (removing all data)" (pulumi_gcp/healthcare/dicom_store.py).
_FORCES_NEW = re.compile(r"forces\s+a\s+new\b|may\s+recreate\b", re.IGNORECASE)


@dataclass(frozen=True)
class Property:
    """One input of a resource, under its wire (camelCase) name."""

    name: str
    required: bool
    doc: str

    @property
    def doc_forces_new(self) -> bool:
        return bool(_FORCES_NEW.search(self.doc))


@dataclass(frozen=True)
class ResourceSchema:
    token: str
    source: Path
    inputs: dict[str, Property]
    # Inputs and outputs (the `_<Name>State` class); `id` and `urn` are the engine's.
    state: frozenset[str]

    @property
    def outputs_only(self) -> frozenset[str]:
        return self.state - set(self.inputs)

    @property
    def doc_forces_new(self) -> frozenset[str]:
        return frozenset(name for name, prop in self.inputs.items() if prop.doc_forces_new)


class SchemaNotFound(LookupError):
    pass


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SchemaNotFound(f"the {package} SDK is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


_PACKAGES = {"gcp": "pulumi_gcp", "time": "pulumiverse_time"}


def _module_files(token: str) -> list[Path]:
    """The SDK files that may define `token` ("gcp:healthcare/dicomStore:DicomStore"): those of
    its module's directory ("index" is the package root)."""
    package, module, _ = token.split(":")
    root = _package_dir(_PACKAGES[package])
    folder = root if module.startswith("index/") else root / module.split("/")[0]
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def _getter_name(node: ast.FunctionDef) -> str | None:
    """The wire name of a `@pulumi.getter` property, None for another function."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if not (isinstance(target, ast.Attribute) and target.attr == "getter"):
            continue
        if call:
            for keyword in call.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
        return node.name
    return None


def _properties(cls: ast.ClassDef) -> dict[str, Property]:
    found: dict[str, Property] = {}
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        name = _getter_name(node)
        if name is None:
            continue
        annotation = ast.unparse(node.returns) if node.returns else ""
        found[name] = Property(
            name=name,
            required="Optional[" not in annotation,
            doc=ast.get_docstring(node) or "",
        )
    return found


@functools.cache
def resource_schema(token: str) -> ResourceSchema:
    """The inputs and state of resource `token` as the installed SDK declares them."""
    class_name = token.split(":")[-1]
    quoted = (f'"{token}"', f"'{token}'")
    for path in _module_files(token):
        text = path.read_text(encoding="utf-8")
        if not any(q in text for q in quoted):
            continue
        classes = {
            node.name: node for node in ast.parse(text).body if isinstance(node, ast.ClassDef)
        }
        # "<Name>InitArgs" where "<Name>Args" is taken by a nested input type (bigquery's
        # DatasetAccess: pulumi codegen's name-collision rule).
        args = classes.get(f"{class_name}Args") or classes.get(f"{class_name}InitArgs")
        state = classes.get(f"_{class_name}State")
        if args is None:
            continue
        inputs = _properties(args)
        names = set(inputs) | (set(_properties(state)) if state else set())
        return ResourceSchema(token=token, source=path, inputs=inputs, state=frozenset(names))
    raise SchemaNotFound(f"no {token} in the installed SDK")
