"""Panels: how fast a warm 6-panel dashboard is fully drawn in a real browser, and page weight.

A backfilled Prometheus behind the AMP stand-in (SigV4 verified), the gateway (memory cache) on
a socket, Debian's chromium (headless, via Playwright). The clock is the page's own: from
navigation start to the `panels-drawn-1` mark panel.js sets once every panel has been drawn by
Plotly. Cold: a new browser profile and an empty gateway cache. Warm: the same profile reloading
(plotly.js from the browser cache) with the gateway cache filled. Target: warm <= 1 s.

    .venv/bin/python bench/bench_panels.py [--loads 7] [--dashboard demo]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from playwright.async_api import async_playwright  # noqa: E402
from support.amp_standin import start_amp  # noqa: E402
from support.gateway import LiveGateway, gateway_settings  # noqa: E402
from support.prometheus import start_prometheus  # noqa: E402
from support.testenv import AMP_REGION, CHROMIUM, CHROMIUM_ARGS, WORKSPACES  # noqa: E402

TARGET_MS = 1000.0
_MEASURE = """() => {
  const mark = performance.getEntriesByName('panels-drawn-1')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const transfer = nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0);
  const decoded = nav.decodedBodySize + resources.reduce((n, r) => n + r.decodedBodySize, 0);
  return {drawn: mark.startTime, transfer, decoded, requests: resources.length + 1,
          panels: document.querySelectorAll('.panel[data-state="drawn"]').length};
}"""


async def load(page: Any, url: str) -> dict[str, float]:
    await page.goto(url)
    await page.wait_for_function("() => performance.getEntriesByName('panels-drawn-1').length > 0")
    return await page.evaluate(_MEASURE)


async def run(url: str, loads: int) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1440, "height": 1000})
        page = await context.new_page()
        cold = await load(page, url)
        warm = [await load(page, url) for _ in range(loads)]
        await browser.close()
    drawn = [w["drawn"] for w in warm]
    median = statistics.median(drawn)
    print(f"dashboard: {url}")
    print(f"panels drawn: {cold['panels']:.0f} (cold), {warm[-1]['panels']:.0f} (warm)")
    print(f"cold load, fully drawn: {cold['drawn']:.0f} ms")
    print(
        f"warm load, fully drawn: median {median:.0f} ms, min {min(drawn):.0f}, max {max(drawn):.0f} ms "
        f"over {loads} loads"
    )
    print(f"warm / target (1 s): {median / TARGET_MS:.2f}")
    print(
        f"page weight cold: {cold['transfer'] / 1024:.0f} KiB transferred "
        f"({cold['decoded'] / 1024:.0f} KiB decoded), {cold['requests']:.0f} requests"
    )
    print(
        f"page weight warm: {warm[-1]['transfer'] / 1024:.0f} KiB transferred, {warm[-1]['requests']:.0f} requests"
    )
    print(f"cold / warm draw time: {cold['drawn'] / median:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--dashboard", default="demo")
    args = parser.parse_args()
    prometheus = start_prometheus(Path(tempfile.mkdtemp(prefix="bench-panels-")))
    amp = start_amp({ws: prometheus.url for ws in WORKSPACES}, region=AMP_REGION)
    os.environ.update(
        AWS_ACCESS_KEY_ID=amp.access_key,
        AWS_SECRET_ACCESS_KEY=amp.secret_key,
        AWS_REGION=AMP_REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    settings = gateway_settings(
        amp, raw={"cache": {"mode": "memory"}, "panels": {"dashboards_dir": str(ROOT / "dashboards")}}
    )
    gateway = LiveGateway(settings).start()
    try:
        asyncio.run(run(f"{gateway.url}/dashboards/{args.dashboard}", args.loads))
    finally:
        gateway.stop()
        amp.stop()
        prometheus.stop()


if __name__ == "__main__":
    main()
