"""The cost view's API, behind the API's authentication and rate limits:

- `GET /api/v1/gateway/cost?by=<dimension>&range=24h`: one row per name of the dimension
  (workspace, principal, dashboard, panel, org, user), most samples first;
- `GET /api/v1/gateway/cost/over_time?range=24h[&by=dashboard&key=<uid>]`: one point per
  hour (per UTC day past 48 h), of everything or of one row.

A principal sees its own spending only; one that may query every configured workspace and has
no enforced labels sees everyone's (with auth off, everyone is such an anonymous principal).
Registered before the Prometheus API's mount, whose catch-all answers any other /api/v1 path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.respond import error_response
from gateway.api.routes import read_params
from gateway.config import Principal, Settings
from gateway.errors import GatewayError, bad_param
from gateway.golang import format_duration, parse_duration_ms
from gateway.metrics import Metrics
from gateway.pipeline.cost.ledger import Ledger, Row
from gateway.pipeline.cost.periods import DAY, MAX_RANGE
from gateway.pipeline.cost.tally import DIMENSIONS

COST_PATH = "/api/v1/gateway/cost"
DEFAULT_RANGE = "24h"
_HEADERS = {"Cache-Control": "no-store"}  # one principal's figures

Authenticate = Callable[[Headers, str], Awaitable[Principal]]
Admit = Callable[[Principal], Awaitable[None]]


def cost_routes(
    settings: Settings, ledger: Ledger, authenticate: Authenticate, admit: Admit, metrics: Metrics
) -> list[BaseRoute]:
    api = CostApi(settings, ledger, authenticate, admit, metrics)
    return [
        Route(COST_PATH, api.rows, methods=["GET", "POST"]),
        Route(f"{COST_PATH}/over_time", api.over_time, methods=["GET", "POST"]),
    ]


class CostApi:
    def __init__(
        self, settings: Settings, ledger: Ledger, authenticate: Authenticate, admit: Admit, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self._authenticate = authenticate
        self._admit = admit
        self._metrics = metrics

    async def rows(self, request: Request) -> Response:
        return await self._answer("cost", request, self._rows)

    async def over_time(self, request: Request) -> Response:
        return await self._answer("cost_over_time", request, self._over_time)

    async def _answer(
        self, name: str, request: Request, build: Callable[[Request, str | None], Awaitable[dict[str, Any]]]
    ) -> Response:
        try:
            address = request.client.host if request.client else "-"
            principal = await self._authenticate(request.headers, address)
            await self._admit(principal)
            data = await build(request, self.scope(principal))
            document: dict[str, Any] = {"status": "success", "data": data}
            if self.ledger.degraded:
                document["warnings"] = ["Redis is unavailable: these are this host's totals only"]
            response = Response(orjson.dumps(document), media_type="application/json", headers=_HEADERS)
        except GatewayError as err:
            response = error_response(err, _HEADERS)
        self._metrics.requests.labels(name, "-", str(response.status_code)).inc()
        return response

    def scope(self, principal: Principal) -> str | None:
        """Whose spending `principal` may see: everyone's (None), or its own."""
        if not principal.enforce and all(principal.may_query(w.names) for w in self.settings.workspaces):
            return None
        return principal.name

    async def _rows(self, request: Request, scope: str | None) -> dict[str, Any]:
        params = await read_params(request)
        by = _dimension(params.get("by"))
        text, seconds = _range(params.get("range"))
        rows = await self.ledger.rows(by, seconds, scope)
        return {"by": by, "range": text, "rows": [_row(r) for r in rows]}

    async def _over_time(self, request: Request, scope: str | None) -> dict[str, Any]:
        params = await read_params(request)
        text, seconds = _range(params.get("range"))
        by, key = params.get("by"), params.get("key")
        data: dict[str, Any] = {"range": text}
        if by or key:
            if not key:
                raise bad_param("key", 'required with "by": the row whose points to give')
            data["by"], data["key"] = _dimension(by), key
        buckets, points = await self.ledger.over_time(seconds, scope, by or None, key or None)
        data["step"] = format_duration(buckets.step * 1000)
        data["points"] = [
            {"time": p.time, "samples": p.samples, "cost": p.cost, "saved_samples": p.saved_samples}
            for p in points
        ]
        return data


def _dimension(text: str) -> str:
    if text not in DIMENSIONS:
        given = f"got {text!r}" if text else "missing"
        raise bad_param("by", f"must be one of {', '.join(DIMENSIONS)}; {given}")
    return text


def _range(text: str) -> tuple[str, float]:
    """`range` (Prometheus's duration syntax, at most 31d) as given and in seconds."""
    text = text or DEFAULT_RANGE
    try:
        ms = parse_duration_ms(text)
    except ValueError as err:
        raise bad_param("range", str(err)) from None
    if ms <= 0:
        raise bad_param("range", "must be longer than 0")
    if ms > MAX_RANGE * 1000:
        raise bad_param("range", f"at most {MAX_RANGE // DAY}d: totals are kept for that long")
    return text, ms / 1000


def _row(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": row.key,
        "samples": row.samples,
        "cost": row.cost,
        "saved_samples": row.saved_samples,
    }
    if row.title:
        out["title"] = row.title
    if row.group:
        out["group"] = row.group
    return out
