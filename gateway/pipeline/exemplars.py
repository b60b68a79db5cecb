"""Stage: answer `query_exemplars` as a Prometheus without exemplar storage does.

AMP does not serve /api/v1/query_exemplars (it is not in its list of Prometheus-compatible
APIs), so forwarding it would turn Grafana's exemplar probe and exemplar queries into errors.
The request has been validated and label-enforced by the stages before this one.
"""

from __future__ import annotations

from gateway.pipeline.model import Handler, UpstreamRequest, UpstreamResponse

EMPTY = b'{"status":"success","data":[]}'


def exemplars_stage(next_handler: Handler) -> Handler:
    async def handle(request: UpstreamRequest) -> UpstreamResponse:
        if request.endpoint == "query_exemplars":
            return UpstreamResponse(200, EMPTY, cache="bypass; reason=answered-locally")
        return await next_handler(request)

    return handle
