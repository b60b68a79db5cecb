"""Routes of the panel pages (/panels/rate, /panels/query), their figure JSON, static assets,
file-defined dashboards and the cost page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api.respond import error_response
from gateway.api.routes import PrometheusApi, read_params
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.panels import assets, pages
from gateway.panels.access import Endpoint, signed_in
from gateway.panels.cost_page import CostPages
from gateway.panels.dashboard_routes import DashboardPages
from gateway.panels.dashboards import DashboardStore
from gateway.panels.service import JSON_HEADERS, figure_response
from gateway.panels.spec import parse_panel, parse_view
from gateway.pipeline.authenticate import Authenticator
from gateway.pipeline.validate import parse_cost
from gateway.promql import offloop

log = logging.getLogger("gateway.dashboards")

KINDS = ("rate", "query")


def panel_routes(settings: Settings, api: PrometheusApi, guard: Authenticator) -> list[BaseRoute]:
    """Every route of the panels feature; app.py adds them after the API's."""
    store = DashboardStore(settings.panels.dashboards_dir)
    if store.missing():
        log.warning("panels.dashboards_dir: %s is not a directory; no dashboards are served", store.where)
    store.refresh()
    single = PanelPages(settings, api)
    boards = DashboardPages(settings, api, store)

    def json(endpoint: Endpoint) -> Endpoint:
        return signed_in(settings.panels, guard, endpoint, json=True)

    def data(endpoint: Endpoint) -> Endpoint:
        return signed_in(settings.panels, guard, endpoint, json=True, data=True)

    def html(endpoint: Endpoint) -> Endpoint:
        return signed_in(settings.panels, guard, endpoint, json=False)

    # Static assets (plotly.js, the page script and styles) hold no data: served to anyone.
    routes: list[BaseRoute] = [Route("/panels/static/{name}", assets.serve, methods=["GET", "HEAD"])]
    for prefix in ("", "/workspaces/{workspace}"):
        for kind in KINDS:
            routes.append(Route(f"{prefix}/panels/{kind}.json", data(single.figure(kind)), methods=["GET"]))
            routes.append(Route(f"{prefix}/panels/{kind}", html(single.page(kind)), methods=["GET"]))
    routes.append(Route("/dashboards", html(boards.index), methods=["GET"]))
    routes.append(Route("/dashboards/{name}/panels/{index:int}.json", data(boards.figure), methods=["GET"]))
    routes.append(Route("/dashboards/{name}/grafana.json", json(boards.grafana_export), methods=["GET"]))
    routes.append(Route("/dashboards/{name}", html(boards.page), methods=["GET"]))
    # The cost page; its figures hold one caller's spending: data, signed in even when public.
    costs = CostPages(settings)
    routes.append(Route("/cost/{chart}.json", data(costs.figure), methods=["GET"]))
    routes.append(Route("/cost", html(costs.page), methods=["GET"]))
    return routes


class PanelPages:
    def __init__(self, settings: Settings, api: PrometheusApi) -> None:
        self.settings = settings
        self.api = api

    def figure(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                params = await read_params(request)
                panel = await offloop.run(parse_cost(params), parse_panel, params, kind)
                view = parse_view(params)
                return await figure_response(self.api, request, panel, view)
            except GatewayError as err:
                return error_response(err, JSON_HEADERS)

        return handle

    def page(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            title = "Rate panel" if kind == "rate" else "Query panel"
            try:
                params = await read_params(request)
                view = parse_view(params)
                # A public page is read before anyone signs in: its query is checked (regexes
                # compiled) when the figure's JSON is asked for, authenticated.
                check = not self.settings.panels.public
                read = partial(parse_panel, check=check)
                panel = await offloop.run(parse_cost(params), read, params, kind)
            except GatewayError as err:
                return pages.page(
                    settings=self.settings.panels, title=title, error=err.message, status=err.status
                )
            title = panel.title or (params.get("metric") if kind == "rate" else title)
            query_string = request.url.query
            src = f"{request.url.path}.json" + (f"?{query_string}" if query_string else "")
            ranged = params.get("start") != "" and params.get("end") != ""
            box = pages.Box(id="panel-0", title="", src=src, height=view.height, note=panel.expr)
            controls = [pages.Control("refresh", "Refresh", pages.REFRESHES, params.get("refresh") or "off")]
            if not ranged:
                controls.insert(0, pages.Control("range", "Range", pages.RANGES, params.get("range") or "1h"))
            return pages.page(
                settings=self.settings.panels,
                title=title,
                subtitle="",
                boxes=[box],
                controls=controls,
                links=[("Figure JSON", src), ("Dashboards", "/dashboards")],
                config={
                    "refresh": view.refresh_ms,
                    "tz": view.tz,
                    "controls": ["range"],
                    "fixedRange": ranged,
                },
                theme=view.theme,
                compact=view.compact,
            )

        return handle
