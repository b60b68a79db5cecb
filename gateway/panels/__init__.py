"""Plotly panels and file-defined dashboards.

`build_figure` turns a Prometheus range-query answer into the same Plotly figure the panel
pages draw; `rate_expr` builds the PromQL of a rate panel.
"""

from gateway.panels.figure import build_figure
from gateway.panels.spec import rate_expr

__all__ = ["build_figure", "rate_expr"]
