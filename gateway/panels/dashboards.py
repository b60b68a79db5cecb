"""Dashboards defined in YAML files: loading, validation with file and line, reload on change.

    title: HTTP requests                 # required
    description: Request rates of the recommender
    workspace: ws-1                      # default: the gateway's default workspace
    range: 1h                            # default time range
    refresh: 30s                         # default: off
    variables:
      - name: job                        # used as $job or ${job}
        label: job                       # label whose values are offered (default: name)
        match: http_requests_total       # series selector limiting them (optional)
        default: recommender             # default: the first value (or All)
        all: false                       # offer All (.*), for job=~"$job"
    panels:
      - title: Requests by path
        rate: {metric: http_requests_total, by: [path], match: 'job="$job"', window: 5m}
        unit: reqps                      # Grafana unit id
        legend: "{{path}}"
        width: 12                        # of 24 columns (default 12)
        height: 8                        # Grafana grid rows (default 8)
      - title: Anything else
        query: sum(rate(node_network_transmit_bytes_total{job="$job"}[$__rate_interval]))

A file that cannot be used is reported (name, line, what is wrong) in the log and on the index
page; the other files keep working. Files are checked for changes (mtime, size) on every use:
a directory listing and a few stats, far cheaper than the query each page makes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.readers import Reader
from gateway.errors import GatewayError
from gateway.golang import LABEL_NAME_RE, try_duration_ms
from gateway.panels.spec import parse_panel
from gateway.panels.units import MAX_UNIT_LENGTH
from gateway.pipeline.endpoints.params import Params
from gateway.pipeline.endpoints.promql_params import parse_matchers

log = logging.getLogger("gateway.dashboards")

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GRID_COLUMNS = 24
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    match: str = ""
    default: str = ""
    include_all: bool = False  # offer "All" (the regex .*, for `label=~"$name"`)


ALL_VALUE = ".*"


@dataclass(frozen=True)
class PanelDef:
    title: str
    kind: str  # rate | query
    fields: tuple[tuple[str, str], ...]  # the /panels/<kind> parameters that define it
    unit: str = ""
    legend: str = ""
    width: int = 12
    height: int = 8

    def params(self) -> list[tuple[str, str]]:
        extra = [("unit", self.unit), ("legend", self.legend), ("title", self.title)]
        return [*self.fields, *((k, v) for k, v in extra if v)]

    def get(self, name: str) -> str:
        return dict(self.fields).get(name, "")


@dataclass(frozen=True)
class Dashboard:
    name: str
    title: str
    file: str
    description: str = ""
    workspace: str | None = None
    range: str = "1h"
    refresh: str = ""
    variables: tuple[Variable, ...] = ()
    panels: tuple[PanelDef, ...] = ()


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f" line {self.line}" if self.line else ""
        return f"{self.file}{where}: {self.message}"


class DashboardError(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# ---------------------------------------------------------------- YAML with line numbers


class _Located(dict[Any, Any]):
    """A mapping that remembers the line of itself and of each key."""

    line: int = 0
    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    mapping = _Located(loader.construct_mapping(node, deep=True))
    mapping.line = node.start_mark.line + 1
    mapping.lines = {
        str(key.value): key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)
    }
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(mapping: Any, key: str | None = None) -> int | None:
    if not isinstance(mapping, _Located):
        return None
    if key is not None and key in mapping.lines:
        return mapping.lines[key]
    return mapping.line


def _fail(message: str, raw: Mapping[str, Any], key: str | None) -> Exception:
    return DashboardError(message, _line(raw, key))


def _reader(raw: Mapping[str, Any], where: str) -> Reader:
    return Reader(raw, where, _fail)


def _text(reader: Reader, key: str, default: str = "", limit: int = 2000) -> str:
    text: str = reader.text(key, default, limit=limit, numbers=True)
    return text


def _duration(reader: Reader, key: str, default: str) -> str:
    text = _text(reader, key, default)
    if text and text != "off" and not try_duration_ms(text):
        raise reader.error(key, f"{text!r} is not a duration such as 30s or 1h")
    return text


# ---------------------------------------------------------------- validation


def parse_dashboard(name: str, file: str, text: str) -> Dashboard:
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise DashboardError(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    if not isinstance(raw, Mapping):
        raise DashboardError("must be a mapping with `title` and `panels`", 1)
    top = _reader(raw, "")
    top.reject_unknown(
        {"title", "description", "workspace", "range", "refresh", "variables", "panels"}, "key"
    )
    title = _text(top, "title", limit=200)
    if not title:
        raise DashboardError("title: required", _line(raw, "title") or 1)
    variables = tuple(_variable(item, i, raw) for i, item in enumerate(top.items("variables")))
    names = [v.name for v in variables]
    for i, duplicate in enumerate(names):
        if duplicate in names[:i]:
            raise DashboardError(
                f"variables[{i}].name: {duplicate!r} is defined twice", _line(raw, "variables")
            )
    panel_items = top.items("panels")
    if not panel_items:
        raise DashboardError("panels: at least one panel is required", _line(raw, "panels") or 1)
    dummy = {v.name: v.default or "x" for v in variables}
    panels = tuple(_panel(item, i, raw, dummy) for i, item in enumerate(panel_items))
    workspace = _text(top, "workspace") or None
    return Dashboard(
        name=name,
        title=title,
        file=file,
        description=_text(top, "description"),
        workspace=workspace,
        range=_duration(top, "range", "1h"),
        refresh=_duration(top, "refresh", ""),
        variables=variables,
        panels=panels,
    )


def _variable(item: Any, index: int, parent: Mapping[str, Any]) -> Variable:
    where = f"variables[{index}]."
    if not isinstance(item, Mapping):
        raise DashboardError(f"variables[{index}]: must be a mapping with `name`", _line(parent, "variables"))
    fields = _reader(item, where)
    fields.reject_unknown({"name", "label", "match", "default", "all"}, "key")
    include_all = fields.flag("all", False)
    name = _text(fields, "name")
    if not LABEL_NAME_RE.match(name) or name.startswith("__"):
        raise DashboardError(f"{where}name: {name!r} is not a variable name", _line(item, "name"))
    label = _text(fields, "label", name)
    if not LABEL_NAME_RE.match(label):
        raise DashboardError(f"{where}label: {label!r} is not a label name", _line(item, "label"))
    match = _text(fields, "match")
    if match:
        try:
            parse_matchers([match])
        except GatewayError as err:
            raise DashboardError(f"{where}match: {err.message}", _line(item, "match")) from None
    default = _text(fields, "default", ALL_VALUE if include_all else "")
    return Variable(name=name, label=label, match=match, default=default, include_all=include_all)


_RATE_KEYS = {"metric", "by", "match", "window", "fn", "agg"}


def _panel(item: Any, index: int, parent: Mapping[str, Any], dummy: Mapping[str, str]) -> PanelDef:
    where = f"panels[{index}]."
    if not isinstance(item, Mapping):
        raise DashboardError(f"panels[{index}]: must be a mapping", _line(parent, "panels"))
    given = _reader(item, where)
    given.reject_unknown({"title", "rate", "query", "unit", "legend", "width", "height"}, "key")
    if ("rate" in item) == ("query" in item):
        raise DashboardError(f"panels[{index}]: needs exactly one of `rate` or `query`", _line(item))
    fields: list[tuple[str, str]] = []
    if "rate" in item:
        kind, rate = "rate", item["rate"]
        if not isinstance(rate, Mapping):
            raise DashboardError(f"{where}rate: must be a mapping with `metric`", _line(item, "rate"))
        rate_fields = _reader(rate, f"{where}rate.")
        rate_fields.reject_unknown(_RATE_KEYS, "key")
        for key in ("metric", "match", "window", "fn", "agg"):
            text = _text(rate_fields, key)
            if text:
                fields.append((key, text))
        by = rate.get("by", [])
        if isinstance(by, str):
            by = [part.strip() for part in by.split(",") if part.strip()]
        if not isinstance(by, list) or not all(isinstance(b, str) for b in by):
            raise DashboardError(f"{where}rate.by: must be a list of label names", _line(rate, "by"))
        if by:
            fields.append(("by", ",".join(by)))
        key_line = _line(item, "rate")
    else:
        kind = "query"
        fields.append(("query", _text(given, "query", limit=20_000)))
        key_line = _line(item, "query")
    panel = PanelDef(
        title=_text(given, "title", limit=200),
        kind=kind,
        fields=tuple(fields),
        unit=_text(given, "unit", limit=MAX_UNIT_LENGTH),
        legend=_text(given, "legend"),
        width=given.whole("width", 12, 1, GRID_COLUMNS),
        height=given.whole("height", 8, 2, 40),
    )
    try:
        parse_panel(Params(panel.params()), kind, dummy)
    except GatewayError as err:
        raise DashboardError(f"panels[{index}]: {err.message}", key_line) from None
    return panel


# ---------------------------------------------------------------- the directory


@dataclass
class _Entry:
    stamp: tuple[int, int]
    dashboard: Dashboard | None
    problem: Problem | None


@dataclass
class DashboardStore:
    """The dashboards of one directory, re-read when a file changes, appears or goes."""

    directory: str
    _entries: dict[str, _Entry] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The directory as an absolute path (a relative one is relative to the working directory)."""
        return os.path.abspath(self.directory)

    def missing(self) -> bool:
        return not os.path.isdir(self.directory)

    def refresh(self) -> None:
        seen: set[str] = set()
        try:
            listing = list(os.scandir(self.directory))
        except OSError:
            listing = []
        for item in listing:
            if not item.name.endswith((".yml", ".yaml")) or item.name.startswith("."):
                continue
            try:
                info = item.stat()
            except OSError:
                continue
            seen.add(item.name)
            stamp = (info.st_mtime_ns, info.st_size)
            entry = self._entries.get(item.name)
            if entry is not None and entry.stamp == stamp:
                continue
            entry = self._load(Path(item.path), stamp)
            self._entries[item.name] = entry
            if entry.problem:  # at start-up and whenever the file changes
                log.warning("dashboard %s", entry.problem)
        for gone in set(self._entries) - seen:
            del self._entries[gone]

    def _load(self, path: Path, stamp: tuple[int, int]) -> _Entry:
        name = path.name.rsplit(".", 1)[0]
        try:
            if not NAME_RE.match(name):
                raise DashboardError("the file name must be letters, digits, '_' or '-' before .yml")
            if stamp[1] > MAX_FILE_BYTES:
                raise DashboardError(f"larger than {MAX_FILE_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
            return _Entry(stamp, parse_dashboard(name, path.name, text), None)
        except DashboardError as err:
            return _Entry(stamp, None, Problem(path.name, err.line, err.message))
        except (OSError, UnicodeDecodeError) as err:
            return _Entry(stamp, None, Problem(path.name, None, f"cannot be read: {err}"))

    def dashboards(self) -> list[Dashboard]:
        self.refresh()
        found = [e.dashboard for e in self._entries.values() if e.dashboard is not None]
        names: dict[str, Dashboard] = {}
        for dashboard in sorted(found, key=lambda d: d.file):
            names.setdefault(dashboard.name, dashboard)  # x.yml and x.yaml: the first wins
        return sorted(names.values(), key=lambda d: d.title.lower())

    def problems(self) -> list[Problem]:
        self.refresh()
        return sorted((e.problem for e in self._entries.values() if e.problem), key=lambda p: p.file)

    def get(self, name: str) -> Dashboard | None:
        for dashboard in self.dashboards():
            if dashboard.name == name:
                return dashboard
        return None
