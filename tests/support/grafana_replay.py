"""Grafana-shaped traffic: dashboard panels' range queries as Grafana's Prometheus data source
sends them, replayed in a fixed order, each answer kept with what reached the AMP stand-in.

Shape (../shared/reference/amp-and-grafana.md §3, grafana `pkg/promlib`): POST to
``api/v1/query_range`` with a form body of ``query``, ``start``, ``end`` (float Unix seconds,
milliseconds at most) and ``step`` (float seconds), keys in Go's sorted ``url.Values`` order;
``start`` and ``end`` aligned down to the step; headers ``X-Dashboard-Uid``, ``X-Panel-Id``,
``X-Grafana-Org-Id``, ``X-Dashboard-Title``, ``X-Panel-Title``, ``X-Grafana-User``
(``send_user_header``), ``User-Agent: Grafana/<version>``, and the principal's bearer token.

Requests go one at a time, refresh by refresh, viewer by viewer, panel by panel: a request's
``upstream`` is then exactly the stand-in's records made while it was answered (fetches the
gateway makes in the background afterwards are not in it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from .amp_standin import AmpStandin, RecordedRequest

GRAFANA_VERSION = "11.6.0"
RANGE_PATH = "/api/v1/query_range"


@dataclass(frozen=True)
class Panel:
    dashboard_uid: str
    dashboard_title: str
    panel_id: int
    panel_title: str
    query: str


@dataclass(frozen=True)
class Viewer:
    user: str  # the Grafana login, sent as X-Grafana-User
    org: int = 1
    token: str | None = None  # the principal's bearer token; None: no Authorization
    principal: str = ""  # the name the gateway knows `token` by, for totals per principal


@dataclass(frozen=True)
class Planned:
    """One request of a replay, before it is sent."""

    panel: Panel
    viewer: Viewer
    refresh: int
    form: tuple[tuple[str, str], ...]  # in the order sent
    headers: tuple[tuple[str, bytes], ...]

    @property
    def body(self) -> bytes:
        return urlencode(self.form).encode()


@dataclass(frozen=True)
class Sent:
    """One replayed request and its answer."""

    panel: Panel
    viewer: Viewer
    refresh: int
    form: tuple[tuple[str, str], ...]
    status: int
    content: bytes  # the answer's body, decoded
    upstream: tuple[RecordedRequest, ...]  # the stand-in's records made while it was answered

    @property
    def charged_samples(self) -> int:
        """The samples AMP would bill for this request's upstream fetches."""
        return sum(record.samples or 0 for record in self.upstream if record.charged)


def go_float(value: float) -> str:
    """A float as Go's strconv.FormatFloat(v, 'f', -1, 64) writes one that has at most
    nanosecond digits: no exponent, no trailing zeros (15 -> "15", 0.5 -> "0.5")."""
    return f"{value:.9f}".rstrip("0").rstrip(".")


def grafana_form(query: str, start: float, end: float, step: float) -> tuple[tuple[str, str], ...]:
    """The form of one range query: start and end aligned down to the step, as promlib's
    AlignTimeRange, and cut to milliseconds, as its formatTime; keys sorted, as url.Values.Encode."""
    aligned_start = math.floor(start / step) * step
    aligned_end = math.floor(end / step) * step
    values = {
        "query": query,
        "start": go_float(math.floor(aligned_start * 1000) / 1000),
        "end": go_float(math.floor(aligned_end * 1000) / 1000),
        "step": go_float(step),
    }
    return tuple(sorted(values.items()))


def grafana_headers(
    panel: Panel, viewer: Viewer, version: str = GRAFANA_VERSION
) -> tuple[tuple[str, bytes], ...]:
    """The headers Grafana's data source sends with a panel's query. Values go as UTF-8 bytes,
    as Go writes them."""
    headers = [
        ("User-Agent", f"Grafana/{version}"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Dashboard-Uid", panel.dashboard_uid),
        ("X-Dashboard-Title", panel.dashboard_title),
        ("X-Panel-Id", str(panel.panel_id)),
        ("X-Panel-Title", panel.panel_title),
        ("X-Grafana-Org-Id", str(viewer.org)),
        ("X-Grafana-User", viewer.user),
    ]
    if viewer.token is not None:
        headers.append(("Authorization", f"Bearer {viewer.token}"))
    return tuple((name, value.encode()) for name, value in headers)


@dataclass(frozen=True)
class Traffic:
    """What to replay: each refresh, each viewer loads every panel over [start, end] at `step`
    seconds; refresh k asks for the window moved on by k * refresh_every seconds (0: the same
    window each time, as an absolute time range)."""

    viewers: Sequence[Viewer]
    panels: Sequence[Panel]
    refreshes: int
    start: float
    end: float
    step: float
    refresh_every: float = 0.0

    def plan(self) -> list[Planned]:
        """Every request, in the order sent."""
        return [
            Planned(
                panel,
                viewer,
                refresh,
                grafana_form(panel.query, *self._window(refresh), self.step),
                grafana_headers(panel, viewer),
            )
            for refresh in range(self.refreshes)
            for viewer in self.viewers
            for panel in self.panels
        ]

    def _window(self, refresh: int) -> tuple[float, float]:
        shift = refresh * self.refresh_every
        return self.start + shift, self.end + shift


def replay(
    client: httpx.Client, base_url: str, traffic: Traffic, amp: AmpStandin | None = None
) -> list[Sent]:
    """Send the traffic one request at a time with a blocking client; with `amp`, each Sent
    keeps the stand-in's records made while it was answered."""
    sent = []
    for planned in traffic.plan():
        before = len(amp.requests) if amp is not None else 0
        response = client.post(_url(base_url), content=planned.body, headers=list(planned.headers))
        sent.append(_sent(planned, response, amp, before))
    return sent


async def replay_async(
    client: httpx.AsyncClient, base_url: str, traffic: Traffic, amp: AmpStandin | None = None
) -> list[Sent]:
    """`replay` with an async client (the in-process gateway's)."""
    sent = []
    for planned in traffic.plan():
        before = len(amp.requests) if amp is not None else 0
        response = await client.post(_url(base_url), content=planned.body, headers=list(planned.headers))
        sent.append(_sent(planned, response, amp, before))
    return sent


def _url(base_url: str) -> str:
    return base_url.rstrip("/") + RANGE_PATH


def _sent(planned: Planned, response: httpx.Response, amp: AmpStandin | None, before: int) -> Sent:
    upstream = tuple(amp.requests[before:]) if amp is not None else ()
    return Sent(
        planned.panel,
        planned.viewer,
        planned.refresh,
        planned.form,
        response.status_code,
        response.content,
        upstream,
    )


# -- totals ---------------------------------------------------------------------------------------


def by_dashboard(sent: Sent) -> str:
    return sent.panel.dashboard_uid


def by_panel(sent: Sent) -> str:
    return f"{sent.panel.dashboard_uid}/{sent.panel.panel_id}"


def by_user(sent: Sent) -> str:
    return sent.viewer.user


def by_principal(sent: Sent) -> str:
    return sent.viewer.principal


def charged_by(sent: Iterable[Sent], key: Callable[[Sent], str]) -> dict[str, int]:
    """The samples the stand-in charged, totalled by `key` (by_dashboard, by_panel, ...)."""
    totals: Counter[str] = Counter()
    for one in sent:
        totals[key(one)] += one.charged_samples
    return dict(totals)
