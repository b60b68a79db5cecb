"""For testing one stage alone: a request factory and fake upstreams that record."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from starlette.datastructures import Headers

from gateway.config import Principal, Workspace
from gateway.pipeline.endpoints import ENDPOINTS
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
        endpoint=ENDPOINTS[endpoint],
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


class SlowUpstream(FakeUpstream):
    """Answers `body` (or raises `error`) after `delay` seconds; counts the most requests it
    held at once."""

    def __init__(
        self,
        delay: float,
        error: BaseException | None = None,
        body: bytes = b'{"status":"success","data":[]}',
    ) -> None:
        super().__init__(Answer(body, headers=(("x-seen", "1"),)))
        self.delay = delay
        self.error = error
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, request: Request) -> Answer:
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.error is not None:
            raise self.error
        return self.answer


class BrokenUpstream(SlowUpstream):
    """A bug below the stage under test: raises an unexpected exception after `delay`."""

    async def __call__(self, request: Request) -> Answer:
        await super().__call__(request)
        raise RuntimeError("a bug below the coalescing stage")


PRINCIPAL = Principal(name="team-a")
