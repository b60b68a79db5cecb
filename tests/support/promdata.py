"""Deterministic synthetic metrics in OpenMetrics text, shaped like DATA.md.

The output is meant for ``promtool tsdb create-blocks-from openmetrics``:
every family has a ``# TYPE`` line, counters expose ``_total`` samples,
timestamps are unix seconds, samples of one series are contiguous and in time
order, and the text ends with ``# EOF``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INTERVAL = 15
DEFAULT_DURATION = 3 * 3600
DEFAULT_SEED = 20240601

DEMO_INSTANCES: tuple[str, ...] = tuple(f"demo.promlabs.com:{p}" for p in (10000, 10001, 10002))
RECOMMENDER_INSTANCES: tuple[str, ...] = ("recommender-0:8080", "recommender-1:8080")
NODE_INSTANCES: tuple[str, ...] = ("node-0:9100", "node-1:9100")

# le strings exactly as client_golang exposes 0.0001*1.5^i (Go strconv 'g', -1).
LE_STRINGS: tuple[str, ...] = (
    "0.0001",
    "0.00015000000000000001",
    "0.00022500000000000002",
    "0.0003375",
    "0.00050625",
    "0.000759375",
    "0.0011390624999999999",
    "0.0017085937499999998",
    "0.0025628906249999996",
    "0.0038443359374999994",
    "0.00576650390625",
    "0.008649755859375",
    "0.0129746337890625",
    "0.01946195068359375",
    "0.029192926025390625",
    "0.043789389038085935",
    "0.0656840835571289",
    "0.09852612533569335",
    "0.14778918800354002",
    "0.22168378200531003",
    "0.33252567300796504",
    "0.49878850951194753",
    "0.7481827642679213",
    "1.122274146401882",
    "1.683411219602823",
    "+Inf",
)
_LE_VALUES: tuple[float, ...] = tuple(float(s) for s in LE_STRINGS)

MIB = 1024 * 1024
MEMORY_BASES: dict[str, int] = {"used": 1258291200, "cached": 2621440000, "buffers": 173015040}
TOTAL_MEMORY = 8589934592


@dataclass(frozen=True)
class ApiRoute:
    """One (method, path) of the demo service's simulated HTTP clients."""

    method: str
    path: str
    sleep_ms: float  # client sleep, multiplied by the oscillation factor
    latency: float  # base latency in seconds
    error_ratio: float  # share of status 500 (0 for the 404 route)
    outage_seconds: int  # outage = first outage_seconds of every 10 * outage_seconds


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/foo", 10, 0.010, 0.005, 23),
    ApiRoute("POST", "/api/foo", 150, 0.020, 0.02, 60),
    ApiRoute("GET", "/api/bar", 20, 0.015, 0.0025, 13),
    ApiRoute("POST", "/api/bar", 100, 0.050, 0.01, 47),
    ApiRoute("GET", "/api/nonexistent", 500, 0.0005, 0.0, 1),
)


@dataclass(frozen=True)
class DataWindow:
    """Sample timestamps: start, start + interval, ..., end (all inclusive)."""

    start: int
    end: int
    interval: int

    @property
    def timestamps(self) -> range:
        return range(self.start, self.end + 1, self.interval)


def window_ending_at(
    now: float, interval: int = DEFAULT_INTERVAL, duration: int = DEFAULT_DURATION
) -> DataWindow:
    """The window whose last sample is ``now`` rounded down to ``interval``."""
    end = int(now) // interval * interval
    return DataWindow(start=end - duration, end=end, interval=interval)


class _Out:
    """Collects series per metric family; families are emitted contiguously."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, (kind, help_text, []))

    def series(self, sample: str, labels: str, ts: Sequence[int], values: Sequence[float]) -> None:
        lines = self._families[_family_of(sample)][2]
        prefix = f"{sample}{{{labels}}} "
        lines.extend(f"{prefix}{_fmt(v)} {t}" for t, v in zip(ts, values, strict=True))

    def text(self) -> str:
        parts: list[str] = []
        for name, (kind, help_text, lines) in self._families.items():
            parts.append(f"# HELP {name} {help_text}")
            parts.append(f"# TYPE {name} {kind}")
            parts.extend(lines)
        parts.append("# EOF")
        return "\n".join(parts) + "\n"


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _stochastic_round(rng: random.Random, x: float) -> int:
    base = math.floor(x)
    return base + (1 if rng.random() < x - base else 0)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _oscillation(t: float) -> float:
    return 2.0 + math.sin(math.sin(2 * math.pi * t / 3600.0))


def _labels(**kv: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in kv.items())


def _demo_labels(instance: str, **extra: str) -> str:
    return _labels(instance=instance, job="demo", **extra)


def _is_holiday(seed: int, idx: int, t: int) -> bool:
    return random.Random(f"{seed}/{idx}/holiday/{t // 300}").random() < 0.2


def _memory(out: _Out, rng: random.Random, w: DataWindow, inst: str) -> None:
    ts = list(w.timestamps)
    steps = w.interval * 10
    sd = 30 * MIB * math.sqrt(steps / 3.0)
    series: dict[str, list[float]] = {k: [] for k in (*MEMORY_BASES, "free")}
    current = {k: float(b) for k, b in MEMORY_BASES.items()}
    for _ in ts:
        for kind, base in MEMORY_BASES.items():
            v = current[kind] + rng.gauss(0.0, sd)
            if not base * 0.5 <= v <= base * 1.5:
                v = float(base)
            current[kind] = v
            series[kind].append(round(v))
        series["free"].append(TOTAL_MEMORY - sum(series[k][-1] for k in MEMORY_BASES))
    for kind, values in series.items():
        out.series("demo_memory_usage_bytes", _demo_labels(inst, type=kind), ts, values)


def _cpu(out: _Out, rng: random.Random, w: DataWindow, inst: str, uptime: float) -> None:
    ts = list(w.timestamps)
    ticks = w.interval * 10
    noise = 0.4 * 0.2 / math.sqrt(12) * math.sqrt(ticks)
    totals = {"user": 1.2 * uptime, "system": 0.8 * uptime, "idle": 2.0 * uptime}
    series: dict[str, list[float]] = {k: [] for k in totals}
    for _ in ts:
        user = 0.12 * ticks + rng.gauss(0, noise)
        system = 0.08 * ticks + rng.gauss(0, noise)
        idle = 0.4 * ticks - user - system
        for mode, inc in (("user", user), ("system", system), ("idle", idle)):
            totals[mode] += inc
            series[mode].append(round(totals[mode], 6))
    for mode, values in series.items():
        out.series("demo_cpu_usage_seconds_total", _demo_labels(inst, mode=mode), ts, values)


def _disk(out: _Out, rng: random.Random, w: DataWindow, inst: str) -> None:
    ts = list(w.timestamps)
    value = rng.uniform(16e9, 100e9)
    values: list[float] = []
    for _ in ts:
        value += 0.5e6 * w.interval * rng.uniform(0.9, 1.1)
        if value > 144e9:
            value = 16e9
        values.append(round(value))
    out.series("demo_disk_usage_bytes", _demo_labels(inst), ts, values)


def _batch(out: _Out, rng: random.Random, w: DataWindow, inst: str) -> None:
    ts = list(w.timestamps)

    def run_at(minute: int) -> float:
        return minute * 60 + 11 + rng.uniform(0.0, 0.3)

    first_minute = (w.start - 11) // 60
    last_run = run_at(first_minute - 1)
    last_success, duration, processed = run_at(first_minute - 2), 60.0, 1_050_000.0
    minute = first_minute
    success_v: list[float] = []
    run_v: list[float] = []
    duration_v: list[float] = []
    bytes_v: list[float] = []
    for t in ts:
        while minute * 60 + 11 <= t:
            now = run_at(minute)
            duration, last_run = now - last_run, now
            if rng.random() < 0.75:
                last_success = now
                processed = float(1_000_000 + 100_000 - rng.randrange(100_000))
            minute += 1
        success_v.append(round(last_success, 3))
        run_v.append(round(last_run, 3))
        duration_v.append(round(duration, 3))
        bytes_v.append(processed)
    labels = _demo_labels(inst)
    out.series("demo_batch_last_success_timestamp_seconds", labels, ts, success_v)
    out.series("demo_batch_last_run_timestamp_seconds", labels, ts, run_v)
    out.series("demo_batch_last_run_duration_seconds", labels, ts, duration_v)
    out.series("demo_batch_last_run_processed_bytes", labels, ts, bytes_v)


def _histogram(out: _Out, rng: random.Random, w: DataWindow, inst: str, uptime: float) -> None:
    ts = list(w.timestamps)
    name = "demo_api_request_duration_seconds"
    for route in API_ROUTES:
        statuses = ("404",) if route.error_ratio == 0 else ("200", "500")
        buckets = {s: [0] * len(LE_STRINGS) for s in statuses}
        sums = {s: route.latency * uptime * 0.5 for s in statuses}
        bucket_v = {s: [[] for _ in LE_STRINGS] for s in statuses}
        sum_v: dict[str, list[float]] = {s: [] for s in statuses}
        count_v: dict[str, list[float]] = {s: [] for s in statuses}
        for t in ts:
            mid = t - w.interval / 2
            outage = mid % (10 * route.outage_seconds) < route.outage_seconds
            latency = route.latency * (3 if outage else 1)
            rate = 1.0 / (route.sleep_ms * _oscillation(mid) / 1000.0 + latency)
            total = _stochastic_round(rng, rate * w.interval)
            error_ratio = min(1.0, route.error_ratio * (10 if outage else 1))
            errors = _stochastic_round(rng, total * error_ratio)
            counts = {"200": total - errors, "500": errors} if route.error_ratio else {"404": total}
            for status, n in counts.items():
                cum = buckets[status]
                for i, le in enumerate(_LE_VALUES):
                    share = 1.0 if math.isinf(le) else _phi((le - latency) / (latency / 10))
                    cum[i] += round(n * share)
                    bucket_v[status][i].append(cum[i])
                sums[status] += n * latency * (1 + rng.gauss(0, 0.01))
                sum_v[status].append(round(sums[status], 6))
                count_v[status].append(cum[-1])
        for status in statuses:
            base = {"method": route.method, "path": route.path, "status": status}
            for le, values in zip(LE_STRINGS, bucket_v[status], strict=True):
                out.series(f"{name}_bucket", _demo_labels(inst, **base, le=le), ts, values)
            out.series(f"{name}_sum", _demo_labels(inst, **base), ts, sum_v[status])
            out.series(f"{name}_count", _demo_labels(inst, **base), ts, count_v[status])


def _misc(out: _Out, rng: random.Random, w: DataWindow, inst: str, idx: int, seed: int) -> None:
    ts = list(w.timestamps)
    labels = _demo_labels(inst)
    out.series("demo_api_http_requests_in_progress", labels, ts, [rng.randint(0, 5) for _ in ts])
    holidays = [1.0 if _is_holiday(seed, idx, t) else 0.0 for t in ts]
    out.series("demo_is_holiday", labels, ts, holidays)
    shipped, shipped_v = rng.uniform(1e4, 1e5), []
    for t, holiday in zip(ts, holidays, strict=True):
        rate = 10.0 / (2.0 + math.sin(2 * math.pi * t / 3600.0)) * (1.8 if holiday else 1.0)
        shipped += _stochastic_round(rng, rate * w.interval)
        shipped_v.append(shipped)
    out.series("demo_items_shipped_total", labels, ts, [float(int(v)) for v in shipped_v])
    even = [t for t in ts if (t // 60) % 2 == 0]
    out.series("demo_intermittent_metric", labels, even, [1] * len(even))


def _counter_series(
    rng: random.Random, ts: Sequence[int], rate: float, start: float, jitter: float = 0.1
) -> list[float]:
    value, values = start, []
    step = ts[1] - ts[0]
    for _ in ts:
        value += _stochastic_round(rng, rate * step * rng.uniform(1 - jitter, 1 + jitter))
        values.append(value)
    return values


def _other_jobs(out: _Out, rng: random.Random, ts: Sequence[int]) -> None:
    paths = {"/api/recommend": (20.0, 0.01), "/api/items": (50.0, 0.002), "/healthz": (0.2, 0.001)}
    for inst in RECOMMENDER_INSTANCES:
        for path, (rate, err) in paths.items():
            for status, r in (("200", rate * (1 - err)), ("500", rate * err)):
                labels = _labels(instance=inst, job="recommender", path=path, status=status)
                values = _counter_series(rng, ts, r, float(rng.randrange(10_000)))
                out.series("http_requests_total", labels, ts, values)
    for inst in NODE_INSTANCES:
        labels = _labels(device="eth0", instance=inst, job="node")
        values = _counter_series(rng, ts, 1.5e6, float(rng.randrange(10**12)), jitter=0.5)
        out.series("node_network_transmit_bytes_total", labels, ts, values)


# (family name, type, help), in output order.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("demo_memory_usage_bytes", "gauge", "Memory usage in bytes."),
    ("demo_num_cpus", "gauge", "The number of CPUs."),
    ("demo_cpu_usage_seconds", "counter", "Total CPU usage in seconds."),
    ("demo_disk_usage_bytes", "gauge", "Disk usage in bytes."),
    ("demo_disk_total_bytes", "gauge", "Total disk space in bytes."),
    ("demo_batch_last_success_timestamp_seconds", "gauge", "Last successful batch run."),
    ("demo_batch_last_run_timestamp_seconds", "gauge", "Last batch run."),
    ("demo_batch_last_run_duration_seconds", "gauge", "Duration of the last batch run."),
    ("demo_batch_last_run_processed_bytes", "gauge", "Bytes processed by the last batch run."),
    ("demo_api_request_duration_seconds", "histogram", "Request durations."),
    ("demo_api_http_requests_in_progress", "gauge", "Requests in progress."),
    ("demo_is_holiday", "gauge", "Whether it is a holiday."),
    ("demo_items_shipped", "counter", "Items shipped."),
    ("demo_intermittent_metric", "gauge", "Present in even minutes only."),
    ("http_requests", "counter", "HTTP requests."),
    ("node_network_transmit_bytes", "counter", "Bytes transmitted."),
)
_FAMILY_NAMES = frozenset(f[0] for f in FAMILIES)


def _family_of(sample: str) -> str:
    if sample in _FAMILY_NAMES:
        return sample
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[: -len(suffix)] in _FAMILY_NAMES:
            return sample[: -len(suffix)]
    raise KeyError(sample)


def generate_openmetrics(window: DataWindow, seed: int = DEFAULT_SEED) -> str:
    """OpenMetrics text for every family, deterministic for (window, seed)."""
    ts = list(window.timestamps)
    out = _Out()
    for name, kind, help_text in FAMILIES:
        out.family(name, kind, help_text)
    for idx, inst in enumerate(DEMO_INSTANCES):
        rng = random.Random(f"{seed}/{idx}")
        uptime = rng.uniform(86400.0, 3 * 86400.0)
        labels = _demo_labels(inst)
        _memory(out, rng, window, inst)
        out.series("demo_num_cpus", labels, ts, [4] * len(ts))
        _cpu(out, rng, window, inst, uptime)
        _disk(out, rng, window, inst)
        out.series("demo_disk_total_bytes", labels, ts, [160e9] * len(ts))
        _batch(out, rng, window, inst)
        _histogram(out, rng, window, inst, uptime)
        _misc(out, rng, window, inst, idx, seed)
    _other_jobs(out, random.Random(f"{seed}/other"), ts)
    return out.text()


def write_openmetrics(path: Path, window: DataWindow, seed: int = DEFAULT_SEED) -> Path:
    """Write :func:`generate_openmetrics` output to ``path``."""
    path.write_text(generate_openmetrics(window, seed), encoding="utf-8")
    return path
