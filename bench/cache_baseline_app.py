"""Baseline for the cache-hit benchmark: a bare Starlette handler returning fixed bytes.

python bench/cache_baseline_app.py PORT BODY_FILE   (BODY_FILE holds gzip bytes)
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = Path(sys.argv[2]).read_bytes()


async def handler(request: Request) -> Response:
    return Response(BODY, media_type="application/json", headers={"content-encoding": "gzip"})


app = Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
        access_log=False, log_level="warning", server_header=False,
    )  # fmt: skip
