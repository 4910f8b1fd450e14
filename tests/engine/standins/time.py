"""The stand-in `time` provider (pulumiverse-time, which bridges hashicorp/terraform-provider-time):
its Sleep resource.

Behaviour from terraform-provider-time internal/provider/resource_time_sleep.go:
- create_duration/destroy_duration: optional strings matching ^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$, at
  least one of the two; Create waits create_duration, Delete waits destroy_duration; changing
  either alone is an in-place update that does not wait ("Updating this value by itself will not
  trigger a delay").
- triggers: a string map with RequiresReplace: changing it replaces the resource, so the wait
  runs again.
- id: the creation time, RFC 3339 in UTC.

Here the durations are recorded and not waited for, unless DICOM_BQ_STANDIN_SLEEP=real.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from time import sleep
from typing import Any

from tests.engine.standins.common import (
    SLEEP_ENV,
    Context,
    JsonMap,
    Kind,
    Provider,
    is_empty,
    is_unknown,
    sdk_plugin,
    serve,
)

_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _wait(value: Any) -> None:
    if os.environ.get(SLEEP_ENV) == "real" and isinstance(value, str) and value:
        sleep(duration_seconds(value))


class Sleep(Kind):
    token = "time:index/sleep:Sleep"
    # triggers: mapplanmodifier.RequiresReplace() (resource_time_sleep.go).
    force_new = frozenset({"triggers"})

    def validate(self, inputs: JsonMap) -> list[str]:
        failures = []
        for name in ("createDuration", "destroyDuration"):
            value = inputs.get(name)
            if isinstance(value, str) and not is_unknown(value) and not _DURATION.match(value):
                failures.append(
                    f"{name}: must be a number immediately followed by ms (milliseconds), "
                    's (seconds), m (minutes), or h (hours). For example, "30s" for 30 seconds.'
                )
        if is_empty(inputs.get("createDuration")) and is_empty(inputs.get("destroyDuration")):
            failures.append(
                "createDuration: At least one attribute out of [destroy_duration,create_duration] "
                "must be specified"
            )
        return failures

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        # The ID is the creation time; Terraform's schema has no other computed attribute.
        return {"id": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state.pop("id"))

    def on_create(self, state: Mapping[str, Any]) -> None:
        _wait(state.get("createDuration"))

    def on_delete(self, state: Mapping[str, Any]) -> None:
        _wait(state.get("destroyDuration"))


def provider() -> Provider:
    name, version = sdk_plugin("pulumiverse_time")
    return Provider(name, version, [Sleep()])


if __name__ == "__main__":
    serve(provider(), sys.argv[1:])
