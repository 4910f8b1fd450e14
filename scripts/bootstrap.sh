#!/usr/bin/env bash
# Creates .venv and installs dicom-bq with its dev tools, from this project's own files only.
# Re-runs the install when pyproject.toml changed since the last one. Needs nothing but python3.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
stamp="$venv/.dicom-bq-installed"
want=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "dicom-bq: installing into $venv (first run takes a minute)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]" >&2
  echo "$want" > "$stamp"
fi
# The CrossGuard pack has its own environment: pulumi-policy pins an older protobuf.
policy_venv="$root/.venv-policy"
policy_stamp="$policy_venv/.dicom-bq-installed"
policy_want=$(cat "$root/policy/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -f "$policy_stamp" ] || [ "$(cat "$policy_stamp")" != "$policy_want" ]; then
  "$python" -m venv "$policy_venv"
  "$policy_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/policy/requirements.txt" >&2
  # The rules (dicom_bq.infra.policy_rules) need only the standard library: the package goes in
  # without its dependencies, so the pack imports it like any installed module.
  "$policy_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root" >&2
  echo "$policy_want" > "$policy_stamp"
fi
