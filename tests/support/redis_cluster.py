"""A private Redis Cluster: three redis-server masters on free loopback ports, slots assigned by
`redis-cli --cluster create` (redis-tools comes with redis-server)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from .netutil import free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisClusterServer:
    workdir: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's address: cluster clients learn the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisClusterServer:
        for port in self.ports:
            node = self.workdir / f"node-{port}"
            node.mkdir()
            log = (node / "redis.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [
                        REDIS_BIN,
                        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(node)),
                        *("--save", "", "--appendonly", "no"),
                        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                        *("--cluster-node-timeout", "2000"),
                        # The bus port would be port + 10000, maybe past 65535 or taken.
                        *("--cluster-port", str(free_port())),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for port in self.ports:
            _wait(lambda port=port: redis.Redis(port=port, socket_timeout=0.5).ping(), "a node did not start")
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            _wait(
                lambda port=port: (
                    redis.Redis(port=port, socket_timeout=0.5).execute_command("CLUSTER INFO")[
                        "cluster_state"
                    ]
                    == "ok"
                ),
                "the cluster did not become ready",
            )
        return self

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, socket_timeout=2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def _wait(ready: object, message: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)
