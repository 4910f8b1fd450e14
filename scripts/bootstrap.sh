#!/usr/bin/env bash
# Creates .venv and installs dicom-bq into it from this project's own files: the versions pinned
# in requirements.lock (runtime, for `scripts/dicom-bq`), or with --dev requirements-dev.lock
# (plus the test and lint tools, for `scripts/test` and CI). Refresh the locks with
# scripts/lock.sh. Re-installs when a lock file or pyproject.toml changed. Needs only python3.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
lock="$root/requirements.lock"
if [ "${1:-}" = "--dev" ]; then
  lock="$root/requirements-dev.lock"
fi
stamp="$venv/.dicom-bq-installed"
want=$(cat "$lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# A dev install also serves the runtime: the runtime bootstrap keeps it.
have=$(cat "$stamp" 2>/dev/null || true)
dev_want=$(cat "$root/requirements-dev.lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$have" != "$want" ] && [ "$have" != "$dev_want" ]; then
  echo "dicom-bq: installing into $venv ($(basename "$lock"); the first run takes a minute)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root" >&2
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
