"""HTML for panel and dashboard pages: escaped text, no inline script, a strict CSP.

Pages carry no inline script: the panel configuration travels in a
`<script type="application/json">` data block (JSON with `<`, `>` and `&` escaped, so no text
can close the element) read by the static panel.js. `style-src` must allow 'unsafe-inline':
plotly.js injects a <style> element and draws SVG with style attributes; styles cannot run
script, and with `default-src 'self'`, `img-src 'self' data:` and no `connect-src` beyond
'self', an injected style has nowhere to send anything.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import HTMLResponse

from gateway.config import PanelSettings
from gateway.panels import assets
from gateway.panels.templates import load_template

RANGES = ("5m", "15m", "30m", "1h", "3h", "6h", "12h", "24h", "2d", "7d")
REFRESHES = ("off", "5s", "10s", "30s", "1m", "5m", "15m")


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def json_script(value: Any) -> str:
    raw = orjson.dumps(value)
    for char, escaped in ((b"&", b"\\u0026"), (b"<", b"\\u003c"), (b">", b"\\u003e")):
        raw = raw.replace(char, escaped)
    return raw.decode()


def security_headers(settings: PanelSettings) -> dict[str, str]:
    ancestors = " ".join(settings.frame_ancestors) or "'none'"
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
        f"base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    )
    headers = {
        "content-security-policy": csp,
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cache-control": "no-cache",
    }
    if settings.frame_ancestors == ("'self'",):
        headers["x-frame-options"] = "SAMEORIGIN"  # for browsers without CSP frame-ancestors
    elif settings.frame_ancestors in ((), ("'none'",)):
        headers["x-frame-options"] = "DENY"
    return headers


@dataclass(frozen=True)
class Box:
    """One panel on a page."""

    id: str
    title: str
    src: str  # the figure JSON, same origin
    columns: int = 24  # of 24
    height: int = 360  # px
    note: str = ""  # the query, shown small under the title


@dataclass(frozen=True)
class Control:
    """A dropdown that sets one URL parameter of every panel (time range, a variable)."""

    param: str
    label: str
    options: Sequence[str | tuple[str, str]]  # values, or (value, text) pairs
    selected: str
    note: str = ""


def _select(control: Control) -> str:
    options = [o if isinstance(o, tuple) else (o, o) for o in control.options]
    if control.selected not in [value for value, _ in options]:
        options.insert(0, (control.selected, control.selected))
    items = "".join(
        f'<option value="{e(value)}"{" selected" if value == control.selected else ""}>{e(text)}</option>'
        for value, text in options
    )
    note = f'<span class="note" role="status">{e(control.note)}</span>' if control.note else ""
    return (
        f'<label class="control"><span>{e(control.label)}</span>'
        f'<select data-param="{e(control.param)}">{items}</select>{note}</label>'
    )


def _box(box: Box) -> str:
    heading = f'<h2 class="panel-title">{e(box.title)}</h2>' if box.title else ""
    note = f'<code class="panel-query" title="{e(box.note)}">{e(box.note)}</code>' if box.note else ""
    header = f'<div class="panel-header">{heading}{note}</div>' if heading or note else ""
    return (
        f'<section class="panel" id="{e(box.id)}" style="grid-column: span {int(box.columns)}">'
        f'{header}<div class="panel-error" role="alert" hidden></div>'
        f'<div class="plot" style="height: {int(box.height)}px"></div></section>'
    )


def page(
    *,
    settings: PanelSettings,
    title: str,
    subtitle: str = "",
    boxes: Sequence[Box] = (),
    controls: Sequence[Control] = (),
    links: Iterable[tuple[str, str]] = (),
    config: dict[str, Any] | None = None,
    theme: str = "light",
    compact: bool = False,
    error: str = "",
    status: int = 200,
    content: str = "",
) -> HTMLResponse:
    """A page of panels (or `content`, HTML the caller escaped) in the common chrome. `config`:
    what panel.js reads besides the boxes' ids and figure sources, which it is given here."""
    scripts = ""
    if config is not None:
        config = {"panels": [{"id": box.id, "src": box.src} for box in boxes], **config}
        scripts = (
            f'<script type="application/json" id="panel-config">{json_script(config)}</script>\n'
            f'<script src="{e(assets.url("plotly.min.js"))}" defer></script>\n'
            f'<script src="{e(assets.url("panel.js"))}" defer></script>'
        )
    body_class = f"theme-{'dark' if theme == 'dark' else 'light'}" + (" compact" if compact else "")
    nav = "".join(f'<a href="{e(href)}">{e(text)}</a>' for text, href in links)
    text = load_template("page.html").substitute(
        title=e(title),
        css=e(assets.url("panel.css")),
        scripts=scripts,
        body_class=body_class,
        heading=e(title),
        subtitle=f'<p class="subtitle">{e(subtitle)}</p>' if subtitle else "",
        controls="".join(_select(c) for c in controls),
        links=nav,
        error=f'<div class="page-error" role="alert">{e(error)}</div>' if error else "",
        main_class="index" if content else "grid",
        panels=content or "".join(_box(b) for b in boxes),
    )
    return HTMLResponse(text, status_code=status, headers=security_headers(settings))
