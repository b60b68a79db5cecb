"""Baseline for the cache-hit benchmark: a bare Starlette handler returning fixed bytes.

python bench/cache_baseline_app.py PORT GZIP_FILE PLAIN_FILE

    BASELINE_GZIP=F BASELINE_PLAIN=F uvicorn --workers N cache_baseline_app:app   (several workers)

`/gzip/...` answers GZIP_FILE's bytes with `content-encoding: gzip` (what a gzip client such as
Grafana gets from the gateway); `/plain/...` answers PLAIN_FILE's bytes as they are (a client
without Accept-Encoding, such as curl). The handler does no work: no header is read, nothing is
compressed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# From the command line, or (in uvicorn's worker processes) from BASELINE_GZIP / BASELINE_PLAIN.
GZIP = Path(os.environ.get("BASELINE_GZIP") or sys.argv[2]).read_bytes()
PLAIN = Path(os.environ.get("BASELINE_PLAIN") or sys.argv[3]).read_bytes()


async def gzipped(request: Request) -> Response:
    return Response(GZIP, media_type="application/json", headers={"content-encoding": "gzip"})


async def plain(request: Request) -> Response:
    return Response(PLAIN, media_type="application/json")


app = Starlette(
    routes=[
        Route("/gzip/{path:path}", gzipped, methods=["GET", "POST"]),
        Route("/plain/{path:path}", plain, methods=["GET", "POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        access_log=False, log_level="warning", server_header=False,
    )  # fmt: skip
