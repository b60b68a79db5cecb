"""Static files for panels: plotly.js from the installed `plotly` package (no CDN, so pages
work air-gapped) and our own script and style sheet, gzip-compressed once and served with
versioned URLs, so browsers may keep them for a year."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/panels/static/"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass
class Asset:
    name: str
    body: bytes
    version: str
    content_type: str

    @property
    def url(self) -> str:
        return f"{PREFIX}{self.name}?v={self.version}"

    @functools.cached_property
    def gzipped(self) -> bytes:
        return gzip.compress(self.body, 9, mtime=0)


def _asset(name: str, body: bytes) -> Asset:
    version = hashlib.sha256(body).hexdigest()[:16]
    return Asset(name, body, version, _TYPES[Path(name).suffix])


def _plotly_path() -> Path:
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


@functools.cache
def load(name: str) -> Asset:
    """One asset, read once and kept for the life of the process (compressed on first use)."""
    if name == "plotly.min.js":
        return _asset(name, _plotly_path().read_bytes())
    if name not in ("panel.js", "panel.css"):
        raise KeyError(name)
    return _asset(name, (STATIC_DIR / name).read_bytes())


def url(name: str) -> str:
    return load(name).url


async def serve(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        asset = load(name)
    except KeyError:
        return Response(
            b"not found\n", 404, media_type="text/plain", headers={"x-content-type-options": "nosniff"}
        )
    etag = f'"{asset.version}"'
    headers = {
        "etag": etag,
        "vary": "Accept-Encoding",
        "x-content-type-options": "nosniff",
        "cache-control": LONG_CACHE if request.query_params.get("v") == asset.version else "no-cache",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = await asyncio.to_thread(lambda: asset.gzipped)
        headers["content-encoding"] = "gzip"
    return Response(body, media_type=asset.content_type, headers=headers)
