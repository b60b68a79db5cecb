"""The /cost page: the query samples AMP charged for the gateway's queries and those the cache
saved, in samples and money, by dashboard, panel, principal and Grafana user, and over time.

A panel page (pages.page, drawn by panel.js): its figures are `/cost/<chart>.json`, each built
from what the cost API (`/api/v1/gateway/cost`) answers the caller, asked in process with the
caller's credentials (`api_client.ask_api`): the API authenticates, rate-limits and keeps a
principal to its own rows; the page sees what the caller would see with curl.
"""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.cost import COST_PATH, DEFAULT_RANGE
from gateway.api.respond import error_response
from gateway.api.routes import read_params
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.golang import parse_duration_ms
from gateway.panels import cost_figures, pages
from gateway.panels.api_client import ask_api
from gateway.panels.service import JSON_HEADERS
from gateway.panels.spec import parse_view

OVER_TIME = "over_time"
RANGES = ("24h", "7d", "31d")
# The charts of the page, in order, each the page's width. Any dimension's chart is served.
CHARTS = (OVER_TIME, "dashboard", "panel", "principal", "user")
ROW_PX = 22  # a table row's height
MAX_TABLE_PX = 520  # a longer table scrolls


class CostPages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.price = settings.cost.price_per_billion_samples
        proxy = settings.auth.proxy
        self._forward = (proxy.header,) if proxy is not None else ()

    async def page(self, request: Request) -> Response:
        """The page: its charts' boxes, the range and refresh controls and the price; no data
        (each chart asks for its own)."""
        try:
            params = await read_params(request)
            view = parse_view(params)
        except GatewayError as err:
            return pages.page(
                settings=self.settings.panels, title="Cost", error=err.message, status=err.status
            )
        query = f"?{request.url.query}" if request.url.query else ""
        # Room for every row of a dimension (`cost.top` and "other", "-") and the table's header.
        tables = min(120 + ROW_PX * (self.settings.cost.top + 3), MAX_TABLE_PX)
        boxes = [
            pages.Box(
                id=f"cost-{chart.replace('_', '-')}",
                title="",
                src=f"/cost/{chart}.json{query}",
                height=view.height if chart == OVER_TIME else max(view.height, tables),
            )
            for chart in CHARTS
        ]
        price = cost_figures.price_text(self.price)
        return pages.page(
            settings=self.settings.panels,
            title="Cost",
            subtitle=(
                "Query samples AMP processed for the gateway's queries (what AMP bills) and those "
                f"the results cache saved, at {price} per billion samples "
                "(cost.price_per_billion_samples). A principal sees its own queries; one that may "
                "query every workspace without enforced labels sees everyone's."
            ),
            boxes=boxes,
            controls=[
                pages.Control("range", "Range", RANGES, params.get("range") or DEFAULT_RANGE),
                pages.Control("refresh", "Refresh", pages.REFRESHES, params.get("refresh") or "off"),
            ],
            links=[
                ("Cost API", f"{COST_PATH}?{urlencode({'by': 'dashboard'})}"),
                ("Dashboards", "/dashboards"),
            ],
            config={
                "refresh": view.refresh_ms,
                "tz": view.tz,
                "controls": ["range"],
                "fixedRange": False,
            },
            theme=view.theme,
            compact=view.compact,
        )

    async def figure(self, request: Request) -> Response:
        """One chart's figure: `over_time`, or the rows of a dimension (`dashboard`, `panel`,
        `principal`, `user`, `org`, `workspace`)."""
        chart = request.path_params["chart"]
        try:
            if chart != OVER_TIME and chart not in cost_figures.DIMENSIONS:
                charts = ", ".join((OVER_TIME, *cost_figures.DIMENSIONS))
                raise GatewayError("not_found", f"no such cost chart: {chart!r}; there are {charts}")
            params = await read_params(request)
            view = parse_view(params)
            range_text = params.get("range") or DEFAULT_RANGE
            tz = "UTC" if view.tz == "browser" else view.tz
            if chart == OVER_TIME:
                document = await ask_api(
                    request, f"{COST_PATH}/over_time", {"range": range_text}, self._forward
                )
                data = document["data"]
                figure = cost_figures.over_time_figure(
                    data["points"],
                    step_ms=parse_duration_ms(data["step"]),
                    range_text=data["range"],
                    price=self.price,
                    theme=view.theme,
                    tz=tz,
                    warnings=document.get("warnings") or (),
                )
            else:
                document = await ask_api(
                    request, COST_PATH, {"by": chart, "range": range_text}, self._forward
                )
                data = document["data"]
                figure = cost_figures.rows_figure(
                    chart, data["rows"], price=self.price, range_text=data["range"], theme=view.theme
                )
        except GatewayError as err:
            return error_response(err, JSON_HEADERS)
        return Response(orjson.dumps(figure), media_type="application/json", headers=JSON_HEADERS)
