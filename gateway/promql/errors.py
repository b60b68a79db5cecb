"""Errors of the PromQL core, worded as Prometheus words them."""

from __future__ import annotations


class PromQLError(ValueError):
    """A query the gateway will not send: its text is the whole message for the client."""


class ParseError(PromQLError):
    """Prometheus's ParseErr: `<line>:<col>: parse error: <what>`."""

    def __init__(self, query: str, start: int, message: str) -> None:
        self.detail = message
        super().__init__(f"{position(query, start)}: parse error: {message}")


class QueryTooComplex(PromQLError):
    """Past one of the gateway's bounds on a query's size or shape, checked before parsing."""


def position(query: str, start: int) -> str:
    """posrange.StartPosInput: line and byte column of a code-point index."""
    if query == "":
        return "unknown position"
    if start < 0 or start > len(query):
        return "invalid position"
    before = query[:start]
    line = before.count("\n") + 1
    last_break = before.rfind("\n")
    column = len(before[last_break + 1 :].encode("utf-8", "surrogatepass")) + 1
    return f"{line}:{column}"
