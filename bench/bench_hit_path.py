"""CPU per cache hit through the whole app, in process (httpx's ASGI transport; the upstream a
bare Starlette app on loopback serving a scalar), for this tree or another given as the working
directory, so that two trees compare in one session without wrk's noise:

    .venv/bin/python bench/bench_hit_path.py this
    (cd /tmp/pre17 && /work/main/.venv/bin/python /work/main/bench/bench_hit_path.py before)
"""

import asyncio
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.getcwd())  # the tree measured: the working directory
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import build_settings

body = b'{"status":"success","data":{"resultType":"scalar","result":[100,"1"]}}'


async def upstream(request):
    return Response(body, media_type="application/json")


up = Starlette(routes=[Route("/workspaces/ws-a/api/v1/query", upstream, methods=["GET", "POST"])])
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(up, log_level="warning"))
threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
time.sleep(1)
settings = build_settings(
    {
        "workspaces": [{"id": "ws-a", "url": f"http://127.0.0.1:{port}/workspaces/ws-a", "sigv4": False}],
        "cache": {"mode": "memory"},
        "access_log": False,
    },
    {},
)
app = create_app(settings)


async def main():
    async with app.router.lifespan_context(app):
        t = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=t, base_url="http://g", headers={"accept-encoding": "gzip"}
        ) as c:
            for _ in range(50):
                r = await c.get("/api/v1/query", params={"query": "1", "time": "100"})
            assert r.headers["x-cache"] == "hit", r.headers
            best = 1e9
            for _ in range(5):
                n = 3000
                a = time.process_time()
                for _ in range(n):
                    await c.get("/api/v1/query", params={"query": "1", "time": "100"})
                best = min(best, (time.process_time() - a) / n * 1e6)
            print(sys.argv[1], "CPU us per hit, whole app (best of 5):", round(best, 1))


asyncio.run(main())
