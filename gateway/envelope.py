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


_GO_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"))
_GO_ESCAPES_UNICODE = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def go_json(value: Any) -> bytes:
    """`value` as JSON with Go's string escapes, as Prometheus writes it."""
    body = orjson.dumps(value)
    for raw, escaped in _GO_ESCAPES:
        if raw in body:
            body = body.replace(raw, escaped)
    if b"\xe2\x80" in body:
        for raw, escaped in _GO_ESCAPES_UNICODE:
            body = body.replace(raw, escaped)
    return body


def with_warning(body: bytes, warning: str) -> bytes:
    """`body` with `warning` first in its top-level warnings (see _spliced); written again when
    the splice does not give exactly that (a layout Prometheus does not write)."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not a Prometheus envelope")
    spliced = _spliced(body, doc, warning)
    if spliced is not None:
        try:
            again = orjson.loads(spliced)
        except orjson.JSONDecodeError:
            again = None
        expected = {**doc, "warnings": [warning, *(doc.get("warnings") or ())]}
        if again == expected:
            return spliced
    doc["warnings"] = [warning, *(doc.get("warnings") or ())]
    return go_json(doc)


def _spliced(body: bytes, doc: dict[str, object], warning: str) -> bytes | None:
    """A success envelope with `warning` first in its top-level `warnings`, every other byte as
    it was. Prometheus writes the envelope compactly with its keys in the order status, data,
    warnings, infos; `"warnings":[` cannot occur inside a JSON string (its quotes would be
    escaped), and the top-level key comes after everything in `data`, so the last one is it."""
    item = go_json(warning)
    if "warnings" in doc:
        at = body.rfind(b'"warnings":[')
        if at >= 0:
            at += len(b'"warnings":[')
            return body[:at] + item + (b"" if body[at : at + 1] == b"]" else b",") + body[at:]
    elif "infos" in doc:
        at = body.rfind(b',"infos":[')
        if at >= 0:
            return body[:at] + b',"warnings":[' + item + b"]" + body[at:]
    else:
        end = len(body.rstrip())
        if body[end - 1 : end] == b"}":
            return body[: end - 1] + b',"warnings":[' + item + b"]" + body[end - 1 :]
    return None
