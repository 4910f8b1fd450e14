"""Checking request bodies against Google's discovery documents, as the real API would."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from googleapiclient import discovery_cache


@cache
def document(api: str, version: str) -> dict[str, Any]:
    text = discovery_cache.get_static_doc(api, version)
    assert text, f"no static discovery document for {api} {version}"
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema_problems(api: str, version: str, schema_name: str, value: Any) -> list[str]:
    doc = document(api, version)
    return _check(doc["schemas"], {"$ref": schema_name}, value, schema_name)


def _check(schemas: dict[str, Any], schema: dict[str, Any], value: Any, path: str) -> list[str]:
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        problems = []
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += _check(schemas, properties[key], item, f"{path}.{key}")
            elif extra is not None:
                problems += _check(schemas, extra, item, f"{path}.{key}")
            else:
                problems.append(f"{path}: unknown field {key!r}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        return [
            p
            for i, item in enumerate(value)
            for p in _check(schemas, schema["items"], item, f"{path}[{i}]")
        ]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{path}: {value!r} is not one of {schema['enum']}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if kind == "integer":
        return (
            []
            if isinstance(value, int) and not isinstance(value, bool)
            else [f"{path}: expected an integer"]
        )
    return []
