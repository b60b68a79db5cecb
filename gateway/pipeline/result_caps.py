"""Stage: at most `limit` results from /series, /labels and /label/<name>/values, with a
warning, whether or not the upstream honoured `limit` (the effective limit: the client's, within
the principal's cap, as the limits stage set it)."""

from __future__ import annotations

from typing import Any

from gateway.envelope import edit_data
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.model import Answer, Handler, Request, Stage


def truncate(answer: Answer, cap: int, what: str) -> Answer:
    def first(data: Any) -> tuple[Any, list[str]] | None:
        if not isinstance(data, list) or len(data) <= cap:
            return None
        return data[:cap], [f"results truncated to {cap} {what} by the gateway's limit"]

    body = answer.json_bytes()
    edited = edit_data(body, first)
    if edited is None or edited is body:
        return answer
    return answer.replace(body=edited, gzipped=False)


def result_caps() -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            answer = await next_handler(request)
            cap = request.endpoint.result_cap
            if not cap:
                return answer
            limit = request.param("limit")
            if limit.isdigit() and int(limit) > 0:
                what = "series" if cap == "max_series" else "names"
                return await work(json_size(answer), truncate, answer, int(limit), what)
            return answer

        return handle

    return stage
