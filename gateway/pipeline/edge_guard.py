"""Stage: the last check before signing. Every query and `match[]` that is about to go upstream
for a label-enforced principal must carry the principal's matchers in every selector, whoever
built the request (the enforcement stage, the cache's sub-range fetches, coalescing, panels,
anything added later). A request that does not is refused, logged and counted; it is never sent.
"""

from __future__ import annotations

import logging

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage, promql_chars
from gateway.promql import PromQLError, offloop, parse_match, parse_query, selectors
from gateway.promql.rewrite import carries

log = logging.getLogger("gateway.enforce")


def violation(request: Request) -> str | None:
    """Why the request must not go upstream for its principal, or None."""
    pairs = request.principal.enforce
    if not pairs:
        return None
    queries = [v for k, v in request.params if k == "query"]
    matches = [v for k, v in request.params if k == "match[]"]
    endpoint = request.endpoint
    if endpoint.selects == "query" and len(queries) != 1:
        return f"{len(queries)} query parameters"
    if endpoint.match_required and not matches:
        return "no match[]"
    if not endpoint.label_scoped:
        return f"{endpoint.name} is not label-scoped"
    try:
        for text in queries:
            if not all(carries(s, pairs) for s in selectors(parse_query(text))):
                return "a selector of the query lacks the principal's matchers"
        for text in matches:
            if not carries(parse_match(text), pairs):
                return "a match[] lacks the principal's matchers"
    except PromQLError:
        return "a query that does not parse"
    return None


def edge_guard(metrics: Metrics) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if not request.principal.enforce:
                return await next_handler(request)
            why = await offloop.run(promql_chars(request.params), violation, request)
            if why is not None:
                metrics.enforcement_violations.labels(request.endpoint.name).inc()
                log.error(
                    "refused to send %s for principal %s: %s (a stage built a request without "
                    "the principal's label matchers) [request id %s]",
                    request.endpoint.name,
                    request.principal.name,
                    why,
                    request.request_id,
                )
                raise GatewayError(
                    "internal",
                    "the gateway refused to send a request without this principal's label matchers; "
                    "this is a gateway bug, see its log",
                )
            return await next_handler(request)

        return handle

    return stage
