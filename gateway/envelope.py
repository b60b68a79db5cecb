"""Prometheus's answer envelope, written in this one place:
{"status":"success","data":…[,"warnings":[…]]} and {"status":"error","errorType":…,"error":…}."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import GatewayError


def success_body(data: object, warnings: list[str] | None = None) -> bytes:
    document: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        document["warnings"] = warnings
    try:
        return orjson.dumps(document)
    except TypeError:  # orjson refuses more than 255 levels (a deep parse_query tree)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def error_body(error: GatewayError) -> bytes:
    """The upstream's own error envelope when it wrote one, else the gateway's."""
    if error.upstream_body is not None:
        return error.upstream_body
    return orjson.dumps({"status": "error", "errorType": error.error_type, "error": error.message})


def edit_data(
    body: bytes | memoryview, edit: Callable[[Any], tuple[Any, list[str]] | None]
) -> bytes | memoryview | None:
    """An answer with `data` replaced by edit(data)[0] and edit(data)[1] added to its warnings;
    `body` itself when there is no `data` or `edit` returns None (nothing to change); None when
    the answer is not a JSON object."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    edited = edit(document["data"]) if "data" in document else None
    if edited is None:
        return body
    data, warnings = edited
    document["data"] = data
    if warnings:
        given = document.get("warnings")
        document["warnings"] = [*(given if isinstance(given, list) else []), *warnings]
    return orjson.dumps(document)
