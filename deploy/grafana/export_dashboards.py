"""Writes deploy/grafana/dashboards/<name>.json: the gateway's shipped dashboards
(dashboards/*.yml) as Grafana dashboards for file provisioning (deploy/compose.yaml).

They are what the gateway serves at /dashboards/<name>/grafana.json (`gateway.panels.grafana.
export`), with the provisioned data source's uid in place of the `${DS_PROMETHEUS}` input:
file provisioning does not ask for inputs. Run it after changing a dashboard or the exporter:

    .venv/bin/python deploy/grafana/export_dashboards.py

tests/deploy fails while the committed files differ from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "dashboards"
TARGET = Path(__file__).resolve().parent / "dashboards"
# The uid of the data source in provisioning/datasources/amp-gateway.yml.
DATASOURCE_UID = "amp-gateway"
INPUT = "${DS_PROMETHEUS}"


def _fill(value: Any) -> Any:
    """The export with every `${DS_PROMETHEUS}` data source uid replaced by DATASOURCE_UID."""
    if isinstance(value, dict):
        return {k: DATASOURCE_UID if k == "uid" and v == INPUT else _fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(item) for item in value]
    return value


def rendered(source: Path = SOURCE) -> dict[str, str]:
    """File name -> JSON text, one per dashboard file of `source`, as the gateway exports it."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gateway.panels import grafana
    from gateway.panels.dashboards import DashboardError, parse_dashboard

    files: dict[str, str] = {}
    for path in sorted(source.iterdir()):
        if path.suffix not in (".yml", ".yaml") or path.name.startswith("."):
            continue
        try:
            dashboard = parse_dashboard(path.stem, path.name, path.read_text(encoding="utf-8"))
        except DashboardError as err:
            raise SystemExit(f"{path}: line {err.line}: {err.message}") from None
        exported = grafana.export(dashboard)
        exported.pop("__inputs", None)  # nothing to ask for: the data source is provisioned
        files[f"{path.stem}.json"] = json.dumps(_fill(exported), indent=2, ensure_ascii=False) + "\n"
    return files


def main() -> int:
    files = rendered()
    TARGET.mkdir(exist_ok=True)
    for stale in TARGET.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
            print(f"removed {stale.relative_to(REPO)}")
    for name, text in files.items():
        path = TARGET / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
