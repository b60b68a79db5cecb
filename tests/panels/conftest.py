"""Fixtures for panel tests: a gateway on a real socket over the AMP stand-in, and one headless
Debian chromium (driven by Playwright, no browser download) shared by the whole session."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from support.amp_standin import AmpStandin
from support.gateway import LiveGateway, gateway_settings
from support.testenv import AMP_REGION, CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
SHIPPED_DASHBOARDS = REPO / "dashboards"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def module_aws_env(amp: AmpStandin) -> Iterator[None]:
    """Static credentials of the AMP stand-in for a gateway that lives for a whole module."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", amp.access_key)
        patch.setenv("AWS_SECRET_ACCESS_KEY", amp.secret_key)
        patch.setenv("AWS_REGION", AMP_REGION)
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def dashboards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped dashboards that a test module may add files to."""
    target = tmp_path_factory.mktemp("dashboards")
    for source in SHIPPED_DASHBOARDS.glob("*.yml"):
        shutil.copy(source, target / source.name)
    return target


@pytest.fixture(scope="module")
def live(amp: AmpStandin, module_aws_env: None, dashboards_dir: Path) -> Iterator[LiveGateway]:
    settings = gateway_settings(
        amp,
        raw={
            "cache": {"mode": "memory"},
            "panels": {"dashboards_dir": str(dashboards_dir), "frame_ancestors": ["'self'"]},
        },
    )
    gateway = LiveGateway(settings).start()
    yield gateway
    gateway.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """Playwright's async API: its sync API would claim the event loop the async tests share."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@dataclass
class BrowserPage:
    """A page plus what its console and network said."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="session")
async def tab(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[BrowserPage]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    result = BrowserPage(page)
    page.on(
        "console", lambda m: result.console_errors.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda err: result.console_errors.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: result.failed_requests.append(r.url))
    page.on("request", lambda r: result.requests.append(r.url))
    yield result
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        await page.screenshot(path=str(ARTIFACTS / f"panels-{name}.png"), full_page=True)
    finally:
        await context.close()
