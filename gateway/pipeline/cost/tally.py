"""One bucket's cost totals for one scope (everyone, or one principal): for each dimension, the
samples AMP processed and the samples saved of at most `top` names, and of every further name
together under OTHER, with the titles Grafana sent.

A name keeps its row while it is among the heaviest (samples and saved samples together): a
name not yet kept takes a free row, or, when all `top` are taken, the row of the lightest kept
name if it brings more than that name holds; the lightest's totals then move to OTHER. So rows
never hold another name's samples (a row is at most what its name spent, the rest is in OTHER),
the sum over a dimension's rows is exactly what was counted, and a heavy dashboard that first
shows up after `top` light ones still gets a row. The Redis script (stores.py) does the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

DIMENSIONS = ("workspace", "principal", "dashboard", "panel", "org", "user")
# The name of every name past `top`: a control character, which no Grafana header (cut to
# printable characters), principal name or workspace id can be.
OTHER = "\x1f"
NOT_SAID = ""  # the request did not say (no X-Dashboard-Uid, ...)


@dataclass(slots=True)
class Entry:
    samples: int = 0
    saved: int = 0
    title: str = ""

    @property
    def weight(self) -> int:
        """What decides which names keep a row: all the work asked for in the name."""
        return self.samples + self.saved


Names = dict[str, Entry]
Tally = dict[str, Names]  # dimension -> name -> entry


def heaviest_first(item: tuple[str, Entry]) -> tuple[int, str]:
    return -item[1].weight, item[0]


def merge(into: Tally, delta: Tally, top: int) -> None:
    """Adds `delta` to `into`, keeping at most `top` names per dimension (see the module)."""
    for dim, names in delta.items():
        kept = into.setdefault(dim, {})
        # Names come heaviest first and kept names only grow: once a newcomer is no heavier than
        # the lightest kept name, no later one is, and the rest go to OTHER without looking.
        closed = False
        for name, entry in sorted(names.items(), key=heaviest_first):
            target = name
            if name != OTHER and name not in kept:
                target = OTHER if closed else _row_for(kept, name, entry.weight, top)
                closed = target == OTHER
            _add(kept, target, entry)


def _row_for(kept: Names, name: str, weight: int, top: int) -> str:
    """Where a name not kept yet is counted: its own new row, or OTHER."""
    if len(kept) - (OTHER in kept) < top:
        return name
    lightest = min((n for n in kept if n != OTHER), key=lambda n: (kept[n].weight, n))
    if weight <= kept[lightest].weight:
        return OTHER
    moved = kept.pop(lightest)
    _add(kept, OTHER, Entry(moved.samples, moved.saved))
    return name


def _add(kept: Names, name: str, entry: Entry) -> None:
    found = kept.get(name)
    if found is None:
        found = kept[name] = Entry()
    found.samples += entry.samples
    found.saved += entry.saved
    if entry.title and name != OTHER:
        found.title = entry.title


def add_all(into: Tally, tally: Tally) -> None:
    """Adds `tally` to `into` without folding (buckets summed for a range, two stores summed)."""
    for dim, names in tally.items():
        kept = into.setdefault(dim, {})
        for name, entry in names.items():
            _add(kept, name, entry)


def fold(names: Names, top: int) -> Names:
    """The `top` heaviest names of a range and OTHER holding the rest (a range's buckets each
    kept their own `top`, which together may be more)."""
    named = sorted(((n, e) for n, e in names.items() if n != OTHER), key=heaviest_first)
    out: Names = {n: Entry(e.samples, e.saved, e.title) for n, e in named[:top]}
    rest = [e for _, e in named[top:]] + ([names[OTHER]] if OTHER in names else [])
    if rest:
        out[OTHER] = Entry(sum(e.samples for e in rest), sum(e.saved for e in rest))
    return out


def total(tally: Tally) -> Entry:
    """The bucket's totals: every request names a workspace, so its dimension holds them all."""
    return Entry(
        sum(e.samples for e in tally.get("workspace", {}).values()),
        sum(e.saved for e in tally.get("workspace", {}).values()),
    )


def encode(tally: Tally) -> bytes:
    return orjson.dumps({dim: {n: _fields(e) for n, e in names.items()} for dim, names in tally.items()})


def _fields(entry: Entry) -> list[int | str]:
    if entry.title:
        return [entry.samples, entry.saved, entry.title]
    return [entry.samples, entry.saved]


def decode(blob: bytes) -> Tally:
    """What `encode` wrote; a record that does not read as one counts as empty."""
    try:
        raw = orjson.loads(blob)
        return {
            str(dim): {str(n): _entry(v) for n, v in names.items()}
            for dim, names in raw.items()
            if dim in DIMENSIONS
        }
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, IndexError):
        return {}


def _entry(value: Iterable[object]) -> Entry:
    fields = list(value)
    samples, saved = fields[0], fields[1]
    if not isinstance(samples, int) or not isinstance(saved, int):
        raise TypeError("not a count")
    title = fields[2] if len(fields) > 2 and isinstance(fields[2], str) else ""
    return Entry(samples, saved, title)
