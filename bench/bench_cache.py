"""Results cache: what it saves the upstream, how fast a hit is, what it costs in memory.

1. Grafana dashboard simulation (upstream requests and samples fetched, cache on versus off),
   memory per cached sample and the byte bound: `cache_savings.py`, in-process.
2. Cache-hit throughput: the gateway (`python -m gateway serve`, own process, memory cache)
   answering one cached 6 h / 20 s query_range (about 108 KB of JSON), versus a bare Starlette
   handler (own process, `cache_baseline_app.py`) returning the same bytes; 16 keep-alive
   connections (wrk, 1 thread), for both kinds of client in the same run, alternating rounds:
   - gzip: `Accept-Encoding: gzip`, as Grafana sends; both answer the gzip bytes;
   - plain: no Accept-Encoding, as curl; both answer the JSON as it is.
   Checked, not assumed: every gateway answer during the runs is a hit (the gateway's own
   `gateway_cache_requests_total` on /metrics), and for each kind the gateway's body equals the
   baseline's byte for byte; the JSON is Prometheus's own answer, byte for byte.

    .venv/bin/python bench/bench_cache.py [--seconds 10] [--rounds 2] [--only-hits]

`--only-hits` runs part 2 only; it talks to the gateway only over HTTP (no gateway import).
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import ROOT, free_port, gateway_package, gateway_process, start_prometheus, wait_until_up

HIT_QUERY = 'sum by (mode) (rate(demo_cpu_usage_seconds_total{job="demo"}[5m]))'  # 3 series
STEP = 20
RANGE = 6 * 3600
# the dashboard part's 6 h window moved over 30 simulated minutes, plus a margin
PROM_DURATION = RANGE + 30 * 60 + 1800
CONNECTIONS = 16
TARGET = 0.5
# wrk's headers per kind of client (wrk sends no Accept-Encoding of its own)
KINDS: dict[str, list[str]] = {"gzip": ["-H", "Accept-Encoding: gzip"], "plain": []}


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    requests: int


def wrk_get(url: str, seconds: int, kind: str) -> Run:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency", *KINDS[kind], url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    assert p50 is not None, out
    return Run(rps, float(p50.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)], requests)


@dataclass
class Answer:
    headers: httpx.Headers
    body: bytes  # as sent: still gzip-encoded when content-encoding says so


def fetch_raw(url: str, kind: str) -> Answer:
    """GET `url` with exactly the headers wrk sends for `kind`; the body is left as sent."""
    with httpx.Client(timeout=30) as client:
        del client.headers["accept-encoding"]  # httpx's default; a plain client sends none
        if kind == "gzip":
            client.headers["accept-encoding"] = "gzip"
        with client.stream("GET", url) as response:
            body = b"".join(response.iter_raw())
    assert response.status_code == 200, (url, response.status_code, body[:500])
    return Answer(response.headers, body)


def cache_results(gateway_url: str) -> dict[str, float]:
    """The gateway's `gateway_cache_requests_total{endpoint="query_range"}` by result, from /metrics."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    found = re.findall(
        r'^gateway_cache_requests_total\{endpoint="query_range",result="(\w+)"\} ([\d.e+]+)$',
        text,
        re.MULTILINE,
    )
    return {result: float(value) for result, value in found}


def check_answers(
    gateway_url: str, base_url: str, params: httpx.QueryParams, bodies: dict[str, bytes]
) -> None:
    """For each kind: a hit, the expected encoding, and the same bytes as the baseline."""
    for kind, expected in bodies.items():
        via = fetch_raw(f"{gateway_url}/api/v1/query_range?{params}", kind)
        bare = fetch_raw(f"{base_url}/{kind}/api/v1/query_range?{params}", kind)
        assert via.headers.get("x-cache") == "hit", (kind, via.headers)
        encoding = "gzip" if kind == "gzip" else None
        assert via.headers.get("content-encoding") == encoding, (kind, via.headers)
        assert bare.headers.get("content-encoding") == encoding, (kind, bare.headers)
        assert via.body == expected, f"{kind}: the gateway's body changed since the first hit"
        assert bare.body == via.body, f"{kind}: the gateway's and the baseline's bodies differ"


Runs = dict[str, dict[str, list[Run]]]  # kind of client -> "bare" | "gateway" -> one per round


def hit_throughput(prom_url: str, end: int, seconds: int, rounds: int) -> tuple[Runs, dict[str, int]]:
    params = httpx.QueryParams({"query": HIT_QUERY, "start": end - RANGE, "end": end, "step": STEP})
    # Prometheus's own answer to a client without Accept-Encoding: what a hit must reproduce
    prometheus_json = fetch_raw(f"{prom_url}/api/v1/query_range?{params}", "plain").body
    env = {"GATEWAY_UPSTREAM_URL": prom_url, "GATEWAY_SIGV4": "false", "GATEWAY_CACHE": "memory"}
    with gateway_process(env) as gateway:
        url = f"{gateway.url}/api/v1/query_range?{params}"
        first = fetch_raw(url, "gzip")
        assert first.headers.get("x-cache") == "miss", first.headers
        gzipped = fetch_raw(url, "gzip")
        plain = fetch_raw(url, "plain")
        for answer in (gzipped, plain):
            assert answer.headers.get("x-cache") == "hit", answer.headers
        assert gzipped.headers.get("content-encoding") == "gzip", gzipped.headers
        assert "content-encoding" not in plain.headers, plain.headers
        assert plain.body == prometheus_json, "plain hit: not Prometheus's answer byte for byte"
        assert gzip.decompress(gzipped.body) == prometheus_json, "gzip hit: not Prometheus's answer"
        bodies = {"gzip": gzipped.body, "plain": plain.body}
        files: dict[str, Path] = {}
        for kind, body in bodies.items():
            files[kind] = Path(tempfile.mkstemp(suffix=f".{kind}")[1])
            files[kind].write_bytes(body)
        port = free_port()
        baseline = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "cache_baseline_app.py"), str(port),
             str(files["gzip"]), str(files["plain"])]
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{base_url}/plain/", baseline, "the baseline")
            check_answers(gateway.url, base_url, params, bodies)
            targets = {
                kind: {"bare": f"{base_url}/{kind}/api/v1/query_range?{params}", "gateway": url}
                for kind in KINDS
            }

            def measure(kind: str, who: str, seconds: int) -> Run:
                before = cache_results(gateway.url) if who == "gateway" else {}
                run = wrk_get(targets[kind][who], seconds, kind)
                if who == "gateway":  # every request wrk completed was answered from the cache
                    after = cache_results(gateway.url)
                    delta = {r: after.get(r, 0.0) - before.get(r, 0.0) for r in after}
                    hits = delta.pop("hit", 0.0)
                    assert hits >= run.requests and not any(delta.values()), (kind, run, hits, delta)
                return run

            for kind in KINDS:  # warm up
                measure(kind, "bare", 2)
                measure(kind, "gateway", 2)
            runs: Runs = {k: {"bare": [], "gateway": []} for k in KINDS}
            for i in range(rounds):
                order = ("bare", "gateway") if i % 2 == 0 else ("gateway", "bare")
                for kind in KINDS:
                    for who in order:
                        runs[kind][who].append(measure(kind, who, seconds))
                    bare, via = runs[kind]["bare"][-1], runs[kind]["gateway"][-1]
                    print(f"  round {i + 1} {kind:5}: bare {bare.requests_per_second:>8.0f} req/s "
                          f"p50 {bare.p50_ms:.2f} ms | gateway {via.requests_per_second:>8.0f} req/s "
                          f"p50 {via.p50_ms:.2f} ms | ratio {via.requests_per_second / bare.requests_per_second:.2f}",
                          flush=True)  # fmt: skip
            check_answers(gateway.url, base_url, params, bodies)
        finally:
            baseline.terminate()
            baseline.wait(10)
            for file in files.values():
                file.unlink()
    return runs, {kind: len(body) for kind, body in bodies.items()}


def report_hits(runs: Runs, sizes: dict[str, int], seconds: int, rounds: int) -> None:
    def med(kind: str, who: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[kind][who])

    print(f"## cache hit, medians of {rounds} rounds x {seconds} s, {CONNECTIONS} connections")
    print(f"{'client':8}{'body bytes':>11}{'bare req/s':>12}{'bare p50':>10}{'gw req/s':>10}"
          f"{'gw p50':>9}{'ratio':>7}  target")  # fmt: skip
    for kind in runs:
        ratio = med(kind, "gateway", "requests_per_second") / med(kind, "bare", "requests_per_second")
        mark = "✔" if ratio >= TARGET else "✘"
        print(f"{kind:8}{sizes[kind]:>11,}{med(kind, 'bare', 'requests_per_second'):>12.0f}"
              f"{med(kind, 'bare', 'p50_ms'):>8.2f}ms{med(kind, 'gateway', 'requests_per_second'):>10.0f}"
              f"{med(kind, 'gateway', 'p50_ms'):>7.2f}ms{ratio:>7.2f}  >= {TARGET} {mark}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only-hits", action="store_true", help="only the cache-hit throughput part")
    args = parser.parse_args()
    began = time.monotonic()
    print(f"gateway package: {gateway_package()}")
    prom = start_prometheus(Path(tempfile.mkdtemp(prefix="bench-cache-")), duration=PROM_DURATION)
    try:
        if not args.only_hits:
            from cache_savings import savings  # builds the gateway in-process

            savings(prom)
        end = int(prom.data_end) // STEP * STEP - 3600
        print(f"## cache hit: {CONNECTIONS} connections (wrk, 1 thread), GET query_range {RANGE // 3600} h "
              f"/ {STEP} s of {HIT_QUERY!r}; gzip and plain clients, alternating rounds", flush=True)  # fmt: skip
        runs, sizes = hit_throughput(prom.url, end, args.seconds, args.rounds)
        report_hits(runs, sizes, args.seconds, args.rounds)
        print("checked: every gateway answer a hit (/metrics), gateway body == baseline body for each kind, "
              "JSON == Prometheus's answer byte for byte")  # fmt: skip
    finally:
        prom.stop()
    print(f"(bench ran {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
