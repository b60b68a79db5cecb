"""A request's Origin from Grafana's headers: each the first of its name, cut to 128 printable
characters; anything else a header holds never reaches a key, a label or the cost API."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway.pipeline.model import MAX_ORIGIN_CHARS, NO_ORIGIN, Origin, origin_of

NAMES = {
    "x-dashboard-uid": "dashboard",
    "x-panel-id": "panel",
    "x-grafana-org-id": "org",
    "x-grafana-user": "user",
    "x-dashboard-title": "dashboard_title",
    "x-panel-title": "panel_title",
}
values = st.text(max_size=300)


@given(st.lists(st.tuples(st.sampled_from([*NAMES, "x-other", "X-Dashboard-Uid"]), values), max_size=10))
def test_each_field_is_the_first_header_of_its_name_cut_and_printable(pairs: list[tuple[str, str]]) -> None:
    headers = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in pairs])
    origin = origin_of(headers)
    for header, field in NAMES.items():
        first = next((v for k, v in pairs if k.lower() == header), None)  # as sent: UTF-8
        expected = (
            "" if first is None else "".join(c for c in first[:MAX_ORIGIN_CHARS] if c.isprintable()).strip()
        )
        assert getattr(origin, field) == expected
        assert len(getattr(origin, field)) <= MAX_ORIGIN_CHARS


def test_grafana_s_headers_and_none() -> None:
    grafana = Headers({"X-Dashboard-Uid": "abc", "X-Panel-Id": "4", "X-Grafana-User": "ann\n"})
    assert origin_of(grafana) == Origin(dashboard="abc", panel="4", user="ann")
    titled = Headers(raw=[(b"x-dashboard-title", "Nœuds à Paris".encode())])
    assert origin_of(titled).dashboard_title == "Nœuds à Paris"
    assert origin_of(Headers({"accept": "*/*"})) is NO_ORIGIN
