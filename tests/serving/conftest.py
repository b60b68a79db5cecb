"""What the tests of real `serve` processes share: a launcher that stops what it started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway import GatewayProcess


@pytest.fixture
def start(tmp_path: Path, aws_env: dict[str, str]) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def launch(raw: dict[str, Any], workers: int = 1) -> GatewayProcess:
        workdir = tmp_path / f"gateway-{len(started)}"
        workdir.mkdir()
        process = GatewayProcess(raw, workdir, aws_env, workers=workers)
        started.append(process)
        return process.start()

    yield launch
    for process in started:
        process.stop()
