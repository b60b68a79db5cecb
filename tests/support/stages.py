"""For testing one stage alone: a request factory and a fake upstream that records."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.datastructures import Headers

from gateway.config import Principal, Workspace
from gateway.pipeline.model import Answer, Incoming, Request

WORKSPACE = Workspace(
    id="ws-1", url="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1", region="us-east-1"
)
EMPTY_MATRIX = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'


def incoming(
    endpoint: str,
    params: dict[str, str] | list[tuple[str, str]] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    label: str = "",
) -> Incoming:
    """An API call as the edge hands it over: GET parameters in the URL, POST ones as a form."""
    encoded = urlencode(params or {}).encode()

    async def body(limit: int) -> tuple[str, bytes]:
        return ("application/x-www-form-urlencoded", encoded) if method == "POST" else ("", b"")

    return Incoming(
        endpoint=endpoint,
        method=method,
        label=label,
        headers=Headers(headers or {}),
        query_string=b"" if method == "POST" else encoded,
        read_body=body,
        request_id="test",
    )


def request(
    endpoint: str = "query", params: tuple[tuple[str, str], ...] = (("query", "up"),), **fields: object
) -> Request:
    base = Request(
        workspace=WORKSPACE,
        endpoint=endpoint,
        path=f"/api/v1/{endpoint}",
        method="POST",
        params=params,
        timeout=5.0,
    )
    return base.replace(**fields)


class FakeUpstream:
    """The next handler: records what reached it, answers `answer`."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[Request] = []
        self.answer = answer or Answer(EMPTY_MATRIX)

    async def __call__(self, request: Request) -> Answer:
        self.requests.append(request)
        return self.answer


PRINCIPAL = Principal(name="team-a")
