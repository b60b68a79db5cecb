"""The cost ledger's tests share: a host store as `serve` makes it, a clock they move, and
requests as Grafana's data-source requests arrive (a dashboard, a panel, an org, a user)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.netutil import free_port
from support.redis_cluster import RedisClusterServer
from support.redis_server import RedisServer
from support.stages import WORKSPACE, request

from gateway.config import CacheSettings, Principal, Workspace
from gateway.config.cost import Budget, CostSettings
from gateway.metrics import Metrics
from gateway.pipeline.cost.ledger import Ledger
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Origin, Request
from gateway.pipeline.shared import SharedRedis

BOUND = 4 << 20
# 2024-02-28 23:00:00 UTC: a day and, a day later, a month end (a leap year's) are near.
T0 = 1_709_161_200.0
OTHER_WORKSPACE = Workspace(
    id="ws-2", url="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-2", region="us-east-1"
)


class Clock:
    """The ledger's wall clock, moved by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ask(principal: str = "team-a", workspace: Workspace = WORKSPACE, **origin: str) -> Request:
    """One Grafana data-source request: its principal, and the dashboard, panel, org, user and
    titles its headers named (Origin's fields)."""
    return request("query", principal=Principal(name=principal), origin=Origin(**origin), workspace=workspace)


def make_host_path(where: Path) -> str:
    """A store's directory as `serve`'s supervisor leaves it: made, its environment in it."""
    where.mkdir(mode=0o700)
    HostStore.make(str(where), BOUND)
    return str(where)


@pytest.fixture
def host_path(tmp_path: Path) -> str:
    return make_host_path(tmp_path / "host")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def host(host_path: str) -> Iterator[HostStore]:
    store = HostStore(host_path, BOUND)
    yield store
    store.close()


def ledger_on(
    host: HostStore,
    clock: Clock,
    shared: SharedRedis | None = None,
    top: int = 20,
    budgets: tuple[Budget, ...] = (),
    metrics: Metrics | None = None,
    flush_every: float = 3600,
) -> Ledger:
    """A worker's ledger. Its reads flush it; the background flush comes after `flush_every`
    seconds (an hour unless a test waits for it: tests that do not close their ledger leave no
    flush behind them)."""
    settings = CostSettings(top=top, budgets=budgets)
    return Ledger(
        settings, host, shared, metrics or Metrics(), clock, namespace="test", flush_every=flush_every
    )


@pytest.fixture(params=["redis", "cluster"])
async def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, bool]]:
    """A real Redis: a single server, then a 3-node cluster; (url, cluster)."""
    server: RedisServer | RedisClusterServer
    if request.param == "cluster":
        server = RedisClusterServer(tmp_path).start()
    else:
        server = RedisServer(free_port(), tmp_path).start()
    yield server.url, request.param == "cluster"
    server.stop()


async def connected(url: str, cluster: bool) -> SharedRedis:
    shared = SharedRedis(CacheSettings(mode="off", redis_url=url, redis_cluster=cluster), Metrics())
    await shared.connect()
    return shared
