"""Pulumi.yaml's `config:` block, generated from the settings model.

Regenerate after changing a setting, from the project folder:
    python -m dicom_bq.infra.project_config
A test fails when Pulumi.yaml and the model disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from dicom_bq.vocabulary.settings import UNDECLARED_KEYS, project_config_schema

REGENERATE = "python -m dicom_bq.infra.project_config"
_MARK = "config:\n"


def config_block() -> str:
    header = (
        "# Generated from dicom_bq/vocabulary/settings.py by "
        f"`{REGENERATE}`; do not edit by hand.\n"
        "# Keys without a default are required in every stack. Empty means not set.\n"
        + "".join(
            f"# {key} is read too, undeclared: {UNDECLARED_KEYS[key]}; the program validates it.\n"
            for key in sorted(UNDECLARED_KEYS)
        )
    )
    body = yaml.safe_dump(
        {"config": project_config_schema()}, sort_keys=False, width=100, allow_unicode=True
    )
    return header + body


def render(current: str) -> str:
    """Pulumi.yaml with its config block replaced (the block is last in the file)."""
    start = current.find("\n# Generated from ")
    if start < 0:
        start = current.find("\n" + _MARK)
    head = current if start < 0 else current[: start + 1]
    return head + config_block()


def main(argv: list[str]) -> int:
    """Rewrites the config block of Pulumi.yaml in the folder given (default: the current one)."""
    path = Path(argv[0] if argv else ".") / "Pulumi.yaml"
    current = path.read_text(encoding="utf-8")
    path.write_text(render(current), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
