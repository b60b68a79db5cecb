"""What the cost meter costs a miss, and what asking for stats=all costs upstream.

For range queries of a growing number of steps against a real Prometheus (3 h of data):
  - samples processed (totalQueryableSamples) with and without the gateway's stats=all (AMP
    bills the same: the stats are read, not computed, so this must be equal);
  - the answer's bytes with the per-step stats and without (what AMP sends more);
  - CPU for the meter's work on the answer (`_metered`: read the stats, remove them, and gzip
    again when the answer came gzip), per answer, against the baseline of only decompressing and
    gzipping the same answer (what the cache does to a miss anyway).

    .venv/bin/python bench/bench_cost_meter.py
"""

from __future__ import annotations

import gzip
import time

import httpx
from common import prometheus

from gateway.pipeline.cost.meter import _metered
from gateway.pipeline.model import Answer

QUERY = "sum by (instance, mode) (rate(demo_cpu_usage_seconds_total[1m]))"
SERIES_QUERY = "rate(demo_cpu_usage_seconds_total[1m])"


def cpu_per_call(fn, *args, runs: int = 30) -> float:
    start = time.process_time()
    for _ in range(runs):
        fn(*args)
    return (time.process_time() - start) / runs


def main() -> None:
    with prometheus() as server:
        end = server.data_end
        print(
            f"{'query':>8} {'steps':>6} {'QSP':>9} {'QSP+all':>9} {'bytes':>9} {'+stats':>7} "
            f"{'meter µs':>9} {'gz µs':>9} {'meter gz µs':>11} {'ratio':>6}"
        )
        with httpx.Client() as client:
            for name, query in (("sum", QUERY), ("series", SERIES_QUERY)):
                for steps in (60, 720, 2880, 10800):
                    step = max(1, round(3 * 3600 / steps))
                    form = {
                        "query": query,
                        "start": str(end - step * steps),
                        "end": str(end),
                        "step": str(step),
                    }
                    url = server.url + "/api/v1/query_range"
                    plain = client.post(url, data=form).content
                    true = client.post(url, data={**form, "stats": "true"}).json()
                    with_all = client.post(url, data={**form, "stats": "all"}).content
                    qsp_true = true["data"]["stats"]["samples"]["totalQueryableSamples"]
                    metered = _metered(Answer(with_all, size=len(with_all)), True)
                    assert metered.body == plain, "stats not removed byte for byte"
                    qsp_all = metered.samples_processed
                    gz = gzip.compress(with_all, 1)
                    meter_plain = cpu_per_call(_metered, Answer(with_all, size=len(with_all)), True)
                    meter_gz = cpu_per_call(_metered, Answer(gz, gzipped=True, size=len(with_all)), True)
                    baseline = cpu_per_call(lambda packed: gzip.compress(gzip.decompress(packed), 1), gz)
                    print(
                        f"{name:>8} {steps:>6} {qsp_true:>9} {qsp_all:>9} {len(plain):>9} "
                        f"{len(with_all) - len(plain):>7} {meter_plain * 1e6:>9.0f} {baseline * 1e6:>9.0f} "
                        f"{meter_gz * 1e6:>11.0f} {meter_gz / baseline:>6.2f}"
                    )


if __name__ == "__main__":
    main()
