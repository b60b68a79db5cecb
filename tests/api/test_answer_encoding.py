"""A gzip answer shared by a client that takes gzip and one that does not (coalesced): each gets
it in its own encoding, Prometheus's bytes, the plain one decompressed off the event loop."""

from __future__ import annotations

import asyncio

import httpx
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer

from gateway.pipeline.answers import OFF_LOOP_BYTES


async def test_a_coalesced_gzip_answer_reaches_a_plain_client_decoded(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    params = {
        "query": '{__name__=~".+"}',
        "start": str(prometheus.data_start),
        "end": str(prometheus.data_end),
        "step": "60",
    }
    direct = httpx.get(f"{prometheus.url}/api/v1/query_range", params=params, timeout=60).content
    fresh_amp.inject_delay(0.5, count=1, path_contains="/api/v1/query_range")
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        zipped, plain = await asyncio.gather(
            client.get("/api/v1/query_range", params=params, headers={"accept-encoding": "gzip"}),
            client.get("/api/v1/query_range", params=params, headers={"accept-encoding": "identity"}),
        )
    assert len(fresh_amp.forwarded) == 1  # one fetch, asked with gzip for the first client
    assert zipped.headers["content-encoding"] == "gzip"
    assert len(direct) > OFF_LOOP_BYTES  # decoded off the event loop
    assert "content-encoding" not in plain.headers
    assert zipped.content == plain.content == direct
