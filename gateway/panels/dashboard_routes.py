"""Routes of file-defined dashboards: the index, one dashboard, its panels' figures, and its
Grafana export."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.respond import error_response
from gateway.api.routes import PrometheusApi, read_params
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.panels import grafana, pages
from gateway.panels.dashboards import ALL_VALUE, Dashboard, DashboardStore, Variable
from gateway.panels.service import JSON_HEADERS, figure_response
from gateway.panels.spec import parse_panel, parse_view, substitute
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.endpoints.params import Params
from gateway.pipeline.model import Answer
from gateway.pipeline.validate import parse_cost
from gateway.promql import offloop

# What a page may change about a dashboard's panels; the queries stay as the file says.
VIEW_PARAMS = ("range", "start", "end", "step", "width", "min_interval", "tz", "theme")
ROW_PX = 30  # Grafana's grid: rows of 30 px with 8 px between them
GAP_PX = 8


# A variable lists at most this many values (a page of a million options draws nothing useful).
MAX_OPTIONS = 1000


def _loads(answer: Answer) -> Any:
    return orjson.loads(answer.json_bytes())


class DashboardPages:
    def __init__(self, settings: Settings, api: PrometheusApi, store: DashboardStore) -> None:
        self.settings = settings
        self.api = api
        self.store = store

    def _dashboard(self, request: Request) -> Dashboard:
        name = request.path_params["name"]
        dashboard = self.store.get(name)
        if dashboard is None:
            broken = [p for p in self.store.problems() if p.file.rsplit(".", 1)[0] == name]
            if broken:
                raise GatewayError("unavailable", f"dashboard {name!r} cannot be shown: {broken[0]}", 503)
            raise GatewayError("not_found", f"no dashboard named {name!r}")
        return dashboard

    async def index(self, request: Request) -> Response:
        cards = []
        for d in self.store.dashboards():
            path = f"/dashboards/{quote(d.name)}"
            description = f"<p>{pages.e(d.description)}</p>" if d.description else ""
            cards.append(
                f'<article class="card"><h2><a href="{pages.e(path)}">{pages.e(d.title)}</a></h2>'
                f'{description}<div class="meta"><span>{len(d.panels)} panels</span>'
                f"<span>{pages.e(d.file)}</span>"
                f'<a href="{pages.e(path)}/grafana.json">Grafana JSON</a></div></article>'
            )
        for problem in self.store.problems():
            cards.append(
                f'<article class="card broken" role="alert"><h2>{pages.e(problem.file)}</h2>'
                f"<p>This file is not loaded:</p><code>{pages.e(problem)}</code></article>"
            )
        if not cards:
            where = pages.e(self.store.where)
            hint = (
                f"<p>{where} is not a directory: set <code>panels.dashboards_dir</code>.</p>"
                if self.store.missing()
                else f"<p>Put YAML files in {where}/</p>"
            )
            cards.append(f'<article class="card"><h2>No dashboards yet</h2>{hint}</article>')
        return pages.page(settings=self.settings.panels, title="Dashboards", content="".join(cards))

    async def page(self, request: Request) -> Response:
        try:
            params = await read_params(request)
            dashboard = self._dashboard(request)
            view = parse_view(params, dashboard.refresh)
        except GatewayError as err:
            return pages.page(
                settings=self.settings.panels, title="Dashboard", error=err.message, status=err.status
            )
        values: dict[str, str] = {}
        controls = []
        for variable in dashboard.variables:
            options, note = await self._options(request, dashboard, variable, values)
            chosen = params.get(f"var-{variable.name}") or variable.default or (options[0] if options else "")
            values[variable.name] = chosen
            choices: list[str | tuple[str, str]] = list(options)
            if variable.include_all:
                choices.insert(0, (ALL_VALUE, "All"))
            controls.append(pages.Control(f"var-{variable.name}", variable.name, choices, chosen, note))
        ranged = params.get("start") != "" and params.get("end") != ""
        if not ranged:
            chosen_range = params.get("range") or dashboard.range
            controls.append(pages.Control("range", "Range", pages.RANGES, chosen_range))
        refresh = params.get("refresh") or dashboard.refresh or "off"
        controls.append(pages.Control("refresh", "Refresh", pages.REFRESHES, refresh))
        shared = [(k, params.get(k)) for k in VIEW_PARAMS if params.get(k)]
        shared += [(f"var-{k}", v) for k, v in values.items()]
        boxes = []
        for i, panel in enumerate(dashboard.panels):
            src = f"/dashboards/{quote(dashboard.name)}/panels/{i}.json"
            if shared:
                src += "?" + urlencode(shared)
            boxes.append(
                pages.Box(
                    id=f"panel-{i}",
                    title=substitute(panel.title, values),
                    src=src,
                    columns=panel.width,
                    height=panel.height * ROW_PX + (panel.height - 1) * GAP_PX - 40,
                )
            )
        base = f"/dashboards/{quote(dashboard.name)}"
        return pages.page(
            settings=self.settings.panels,
            title=dashboard.title,
            subtitle=dashboard.description,
            boxes=boxes,
            controls=controls,
            links=[("All dashboards", "/dashboards"), ("Grafana JSON", f"{base}/grafana.json")],
            config={
                "refresh": view.refresh_ms,
                "tz": view.tz,
                "controls": ["range", *(f"var-{v.name}" for v in dashboard.variables)],
                "fixedRange": ranged,
            },
            theme=view.theme,
            compact=view.compact,
        )

    async def _options(
        self, request: Request, dashboard: Dashboard, variable: Variable, chosen: dict[str, str]
    ) -> tuple[list[str], str]:
        """A variable's values from the label-values API (same path as any API call)."""
        items = [("match[]", substitute(variable.match, chosen))] if variable.match else []
        try:
            answer = await self.api.run(
                request, "label_values", Params(items), dashboard.workspace, variable.label
            )
            body = await work(json_size(answer), _loads, answer)
        except GatewayError as err:
            return [], f"cannot list values: {err.message}"
        except orjson.JSONDecodeError:
            return [], f"cannot list values: HTTP {answer.status}"
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", answer.status) if isinstance(body, dict) else answer.status
            return [], f"cannot list values: {error}"
        values = body.get("data") or []
        if len(values) > MAX_OPTIONS:
            note = f"the first {MAX_OPTIONS} of {len(values)} values; narrow the variable's match"
            return [str(v) for v in values[:MAX_OPTIONS]], note
        return [str(v) for v in values], ""

    async def figure(self, request: Request) -> Response:
        try:
            params = await read_params(request)
            dashboard = self._dashboard(request)
            index = request.path_params["index"]
            if index >= len(dashboard.panels):
                raise GatewayError("not_found", f"dashboard {dashboard.name!r} has no panel {index}")
            panel = dashboard.panels[index]
            values = {v.name: params.get(f"var-{v.name}") or v.default for v in dashboard.variables}
            items = panel.params() + [(k, params.get(k)) for k in VIEW_PARAMS if params.get(k)]
            read = partial(parse_panel, default_range=dashboard.range)
            query = await offloop.run(parse_cost(Params(items)), read, Params(items), panel.kind, values)
            view = parse_view(params)
            # The page shows the title above the chart; the figure does not repeat it.
            query = dataclasses.replace(query, title="")
            return await figure_response(self.api, request, query, view, dashboard.workspace)
        except GatewayError as err:
            return error_response(err, JSON_HEADERS)

    async def grafana_export(self, request: Request) -> Response:
        try:
            dashboard = self._dashboard(request)
        except GatewayError as err:
            return error_response(err)
        body = orjson.dumps(grafana.export(dashboard), option=orjson.OPT_INDENT_2)
        headers = dict(JSON_HEADERS)
        headers["content-disposition"] = f'attachment; filename="{dashboard.name}.grafana.json"'
        return Response(body, media_type="application/json", headers=headers)
