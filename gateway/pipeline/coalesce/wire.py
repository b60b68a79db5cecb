"""What the coalescing tiers share: a request's name (its digest), and an answer or error as
a holder leaves it for the waiters of other processes (Redis's cache, the host's cache records)."""

from __future__ import annotations

import hashlib

import orjson
import xxhash

from gateway.errors import GatewayError
from gateway.pipeline.model import Answer, Request

ANSWER_TTL_MS = 10_000  # how long an answer waits for the waiters to read it
POLL_FIRST, POLL_MAX = 0.005, 0.05  # waiters look for the answer at these intervals, doubling


def request_digest(request: Request) -> str:
    """What identical requests share: the workspace (where it is, not only its id), the call,
    and the principal's enforced labels (a request only joins one made for the same label
    scope, as the cache's keys do)."""
    key = (
        request.workspace.fingerprint,
        request.method,
        request.path,
        request.params,
        request.principal.enforce,
    )
    return hashlib.sha256(orjson.dumps(key)).hexdigest()[:40]


def encode(outcome: Answer | GatewayError, token: str, digest: str) -> bytes:
    """An answer or an error as a waiter reads it: a JSON header line, then the body bytes, with
    the holder's token, the request's digest and a checksum of it all."""
    if isinstance(outcome, Answer):
        header = {
            "answer": True,
            "gzipped": outcome.gzipped,
            "status": outcome.status,
            "headers": outcome.headers,
            "cache": outcome.cache,
        }
        body = outcome.body
    else:
        header = {
            "answer": False,
            "type": outcome.error_type,
            "message": outcome.message,
            "status": outcome.status,
            "headers": dict(outcome.headers),
            "retry": outcome.retry,
            "wait": outcome.wait,
            "failure": outcome.failure,
            "stage": outcome.stage,
            "upstream": outcome.upstream_body is not None,
        }
        body = outcome.upstream_body or b""
    header["token"], header["key"] = token, digest
    payload = orjson.dumps(header) + b"\n" + body
    return xxhash.xxh3_64_digest(payload) + payload


def decode(blob: bytes, token: str, digest: str) -> Answer | GatewayError | None:
    """What `encode` wrote for this round (`token`) of this request (`digest`); None for
    anything else, damaged or not."""
    checksum, payload = blob[:8], blob[8:]
    if xxhash.xxh3_64_digest(payload) != checksum:
        return None
    line, _, body = payload.partition(b"\n")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if header.get("token") != token or header.get("key") != digest:
        return None
    if header["answer"]:
        return Answer(
            body,
            gzipped=header["gzipped"],
            status=header["status"],
            headers=tuple((name, value) for name, value in header["headers"]),
            cache=header["cache"],
        )
    error = GatewayError(
        header["type"],
        header["message"],
        header["status"],
        header["headers"],
        body if header["upstream"] else None,
        header["retry"],
        header["wait"],
        header.get("failure", ""),
    )
    error.stage = header["stage"]
    return error
