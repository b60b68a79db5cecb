"""A private redis-server on a free loopback port, without persistence."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """`password` turns AUTH on; `tls` (certificate, key, CA files) serves TLS only."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None
    tls: tuple[Path, Path, Path] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        query = f"?ssl_ca_certs={self.tls[2]}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def _client(self, timeout: float) -> redis.Redis:
        if self.tls:
            return redis.Redis(
                port=self.port,
                password=self.password,
                socket_timeout=timeout,
                ssl=True,
                ssl_ca_certs=str(self.tls[2]),
            )
        return redis.Redis(port=self.port, password=self.password, socket_timeout=timeout)

    def start(self) -> RedisServer:
        log = (self.workdir / "redis.log").open("wb")
        listen = ["--port", str(self.port)]
        if self.tls:
            cert, key, ca = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            listen += [
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca),
            ]
        if self.password:
            listen += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [
                REDIS_BIN,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        client = self._client(0.5)
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start; see " + str(self.workdir / "redis.log"))
            time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def flush(self) -> None:
        with self._client(1) as client:
            client.flushall()

    def keys(self) -> list[bytes]:
        with self._client(1) as client:
            return list(client.keys("*"))
